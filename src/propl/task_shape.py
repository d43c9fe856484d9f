"""Task shape: is a mask shaped like the task's expert masks?

The confidence (:func:`~propl.uncertainty.confidence_score`) is the network's agreement with
itself, and a network can be sure of a wrong outline. Where a task's expert masks share a shape,
a mask that departs from it is likely wrong where the network is not unsure. The shape measured
is the simplest one every outline has: the **ellipse fit**, the Dice of a mask with the ellipse
of its own second moments (same centre, axes and orientation). It is 1 for an ellipse, about
0.9 for a square, lower for a crescent, a ragged outline or a mask in pieces; it does not change
when a mask is moved, turned or stretched, so it is the same at the scan's size and at the
network's square input.

Each task keeps the **floor** of its expert masks' ellipse fit: the
:data:`FLOOR_PERCENTILE`-th percentile over the masks it was trained on. A mask is judged only
when it falls below the floor, i.e. when it is less elliptic than 95 % of the task's expert
masks: its confidence is multiplied by ``fit / floor``. Fetal heads, outlined as ellipses
(floor 0.998), are judged on every mask; breast lesions (floor 0.84) only on very irregular
ones. Masks of fewer than :data:`MIN_PIXELS` pixels (and empty masks) are not judged.

On the shipped model this lifts the Spearman ρ of the confidence with the true Dice on fetal
heads from 0.62 to 0.75 and leaves the other tasks within 0.02
(``benchmarks/results/task-shape.md``).

The floors live in the checkpoint folder as ``task_shape.json`` (plain JSON, validated on
load; checkpoints without it score as before). ``benchmarks/task_shape.py`` fits and installs
them for the shipped model; project retraining refits a task's floor from the masks the
annotator confirmed once there are :data:`MIN_MASKS` of them (:func:`refit_shapes`), and keeps
the parent's floor before that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointError
from .files import atomic_write_bytes, beside_weights_header, read_json_beside_weights

if TYPE_CHECKING:
    from .data.benchmark import ArraySet

FILE_NAME = "task_shape.json"
KIND = "propl-task-shape"
SCHEMA = 1
FLOOR_PERCENTILE = 5.0
"""A task's floor: this percentile of its expert masks' ellipse fit."""
MIN_MASKS = 10
"""Fewer non-empty masks of a task than this: no floor for it (its masks are not judged)."""
MIN_PIXELS = 16
"""Masks with fewer foreground pixels are not judged (fit 1)."""
NOTE_BELOW = 0.9
"""A frame whose shape factor is below this is named to the annotator (:func:`shape_note`)."""


def ellipse_fit(masks: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(F, H, W)`` masks (nonzero: foreground) → ``(F,)`` float32 ellipse fit:
    the Dice of each mask with the ellipse of its second moments (1 for masks of fewer than
    :data:`MIN_PIXELS` pixels).

    The ellipse of a region with mean ``μ`` and covariance ``Σ`` of its pixel coordinates is
    ``{x : (x − μ)ᵀ Σ⁻¹ (x − μ) ≤ 4}`` (a filled ellipse of semi-axes ``a``, ``b`` has variances
    ``a²/4`` and ``b²/4``); ``Σ`` gets the ``1/12`` of a pixel's own extent so that a line of
    pixels still has an area.
    """
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be (H, W) or (F, H, W), got shape {m.shape}")
    out = np.ones(m.shape[0], np.float32)
    h, w = m.shape[1:]
    for f, frame in enumerate(m != 0):
        n = int(frame.sum())
        if n < MIN_PIXELS:
            continue
        r, c = np.nonzero(frame)
        mu_r, mu_c = r.mean(), c.mean()
        dr, dc = r - mu_r, c - mu_c
        s_rr, s_cc = dr @ dr / n + 1 / 12, dc @ dc / n + 1 / 12
        s_rc = dr @ dc / n
        det = s_rr * s_cc - s_rc * s_rc
        # the ellipse lies within mu ± 2·sqrt(diagonal of Σ): test only that box's pixels
        r0, r1 = max(0, int(mu_r - 2 * s_rr**0.5) - 1), min(h, int(mu_r + 2 * s_rr**0.5) + 2)
        c0, c1 = max(0, int(mu_c - 2 * s_cc**0.5) - 1), min(w, int(mu_c + 2 * s_cc**0.5) + 2)
        y = (np.arange(r0, r1, dtype=np.float64) - mu_r)[:, None]
        x = (np.arange(c0, c1, dtype=np.float64) - mu_c)[None, :]
        inside = (s_cc * y * y - 2 * s_rc * y * x + s_rr * x * x) <= 4 * det
        both = np.count_nonzero(inside & frame[r0:r1, c0:c1])
        out[f] = 2 * both / (np.count_nonzero(inside) + n)
    return out


def shape_note(
    task: str, shape_fit: np.ndarray | None, first: int = 0, below: float | None = None
) -> str | None:
    """What to tell the annotator when a frame's outline is unlike the task's masks (its shape
    factor below ``below``, default :data:`NOTE_BELOW`; for several frames, the lowest,
    numbered from ``first``), or None."""
    if shape_fit is None or len(shape_fit) == 0:
        return None
    f = int(np.argmin(shape_fit))
    if float(shape_fit[f]) >= (NOTE_BELOW if below is None else below):
        return None
    where = "the outline" if len(shape_fit) == 1 else f"frame {first + f}'s outline"
    return (
        f"{where} is unlike the {task} masks (shape {float(shape_fit[f]):.2f}, confidence "
        "lowered): check its edges"
    )


@dataclass(frozen=True)
class TaskShapes:
    """Every task's shape floor for one checkpoint.

    Attributes:
        floors: task id → the floor of its expert masks' ellipse fit, in (0, 1].
        masks: task id → how many masks the floor was fitted on.
        metadata: provenance (what was fitted on), JSON-serialisable.
        source: the file it was read from, for error messages.
    """

    floors: dict[str, float]
    masks: dict[str, int]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def factor(self, masks: np.ndarray, task: str) -> np.ndarray | None:
        """``(F,)`` float32 in (0, 1]: what each mask's confidence is multiplied by,
        ``min(1, fit / floor)``; None when ``task`` has no floor."""
        floor = self.floors.get(task)
        if floor is None:
            return None
        return np.minimum(1.0, ellipse_fit(masks) / floor).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "schema": SCHEMA,
            "percentile": FLOOR_PERCENTILE,
            "metadata": self.metadata,
            "tasks": {
                t: {"ellipse_fit_floor": round(f, 6), "masks": self.masks[t]}
                for t, f in self.floors.items()
            },
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/task_shape.json`` (atomically); returns its path."""
        path = Path(folder) / FILE_NAME
        atomic_write_bytes(path, json.dumps(self.to_json(), indent=1).encode("utf-8"))
        return path


def fit_shapes(
    masks_by_task: Mapping[str, Iterable[np.ndarray]], metadata: dict[str, Any] | None = None
) -> TaskShapes:
    """Each task's floor from its expert masks (``(H, W)`` each, any size); empty and tiny
    masks are left out, and tasks with fewer than :data:`MIN_MASKS` of the rest get none."""
    floors: dict[str, float] = {}
    counts: dict[str, int] = {}
    for task, masks in masks_by_task.items():
        fits = [float(ellipse_fit(m)[0]) for m in masks if np.count_nonzero(m) >= MIN_PIXELS]
        if len(fits) >= MIN_MASKS:
            floors[task] = float(np.percentile(fits, FLOOR_PERCENTILE))
            counts[task] = len(fits)
    return TaskShapes(floors, counts, metadata or {})


def task_shapes_from_json(doc: Any, source: Path | None = None) -> TaskShapes:
    """Validate a parsed ``task_shape.json`` document.

    Raises:
        CheckpointError: anything malformed; the message names the file.
    """
    name = str(source or FILE_NAME)
    try:
        tasks, metadata = beside_weights_header(doc, KIND, SCHEMA, "task shape")
        floors: dict[str, float] = {}
        counts: dict[str, int] = {}
        for task, entry in tasks.items():
            floor = entry.get("ellipse_fit_floor") if isinstance(entry, dict) else None
            n = entry.get("masks") if isinstance(entry, dict) else None
            if (
                isinstance(floor, bool)
                or not isinstance(floor, int | float)
                or not (math.isfinite(floor) and 0 < floor <= 1)
            ):
                raise ValueError(f"task {task!r}: 'ellipse_fit_floor' must be a number in (0, 1]")
            if isinstance(n, bool) or not isinstance(n, int) or n < MIN_MASKS:
                raise ValueError(f"task {task!r}: 'masks' must be an integer >= {MIN_MASKS}")
            floors[str(task)], counts[str(task)] = float(floor), n
    except ValueError as exc:
        raise CheckpointError(f"{name}: invalid task shape floors: {exc}") from exc
    return TaskShapes(floors, counts, metadata, source)


def load_task_shapes(checkpoint: str | Path) -> TaskShapes | None:
    """A checkpoint's floors (folder or weights path), or None when it has none.

    Raises:
        CheckpointError: the file exists but is unreadable or invalid; the message names it.
    """
    found = read_json_beside_weights(checkpoint, FILE_NAME, "task shape floors")
    return None if found is None else task_shapes_from_json(found[1], found[0])


def refit_shapes(
    folder: str | Path,
    sets: Sequence[ArraySet],
    task_order: Sequence[str],
    tasks: Sequence[str],
    parent: str | Path | None = None,
) -> TaskShapes | None:
    """Write a new checkpoint's floors: the trained ``tasks`` with at least
    :data:`MIN_MASKS` confirmed masks in ``sets`` get a floor fitted on them; every other task
    of ``task_order`` keeps the parent's (a floor depends on the masks, not on the network).

    Returns:
        The floors written, or None when there were none to write.
    """
    by_task: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for s in sets:
        for mask, index in zip(s.masks, s.task_index, strict=True):
            task = task_order[int(index)]
            if task in by_task:
                by_task[task].append(mask)
    new = fit_shapes(by_task)
    old = load_task_shapes(parent) if parent is not None else None
    floors, counts = dict(new.floors), dict(new.masks)
    if old is not None:
        for task in task_order:
            if task not in floors and task in old.floors:
                floors[task], counts[task] = old.floors[task], old.masks[task]
    if not floors:
        return None
    meta = {"fitted_on": "confirmed masks", "refit": sorted(new.floors)}
    result = TaskShapes(floors, counts, meta)
    result.save(folder)
    return result
