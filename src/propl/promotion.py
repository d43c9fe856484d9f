"""Promotion: when a new model version becomes the project's current one.

It reads a version's record (:mod:`propl.store.versions`) and moves the project's "current"
pointer (:meth:`~propl.store.Project.set_current`), so it sits above the store: the store's
modules never import it, and the store's project and versions modules no longer import each
other. Only the holder of the project's writer lock promotes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .store.versions import SHIPPED

if TYPE_CHECKING:
    from .store import Project


def promote_if_better(project: Project, name: str) -> bool:
    """Make version ``name`` current when its run judged it better than the model that was
    current when it started, and that model is still current (after another promotion in
    between it would have to be judged again). Its checkpoint is verified first
    (:func:`~propl.checkpoint.verify_checkpoint`: it loads, and predicts finite values).

    Args:
        project: the project, open for writing.
        name: the version, e.g. ``"v0002"``.

    Returns:
        Whether it was promoted.

    Raises:
        CheckpointError: the version would be promoted but its checkpoint is broken; the
            message names the file; the current model is unchanged.
    """
    version = project.version(name)
    if version.outcome != "better" or not version.usable:
        return False
    current = project.current_version()
    if (current.name if current else SHIPPED) != version.baseline:
        return False
    from .checkpoint import verify_checkpoint  # torch: only for a version to promote

    verify_checkpoint(version.path)
    score = version.held_back_score or math.nan
    gain = score - (version.baseline_score or 0.0)
    project.set_current(name, f"held-back Dice {score:.1f} ({gain:+.1f} over {version.baseline})")
    return True


__all__ = ["promote_if_better"]
