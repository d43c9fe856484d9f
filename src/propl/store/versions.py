"""Model versions of a project: write-once folders under ``models/`` and a "current" pointer.

Layout::

    models/
      zarr.json            attrs: current (a version name or absent = the shipped model),
                           history (every promotion and rollback: version, time, who, why)
      v0001/               model.safetensors + model.json (a checkpoint), version.json
      v0002/ ...

A training run writes its version completely in ``models/.staging-<id>/`` and renames it to the
next free ``vNNNN`` (one atomic rename: a version appears whole or not at all). Version folders
are never changed afterwards, so a training subprocess may add one while another process holds
the project's writer lock. Only the lock holder moves the pointer (:meth:`Project.set_current`).

``version.json`` records what a run did: its parent version, the (scan, task) pairs it learned
from and those held back to judge it, the held-back scores of the candidate and of its parent,
the training settings, the held-back scores of the new version and of the baseline (the version
that was current when the run started), and its outcome:

- ``better``: it beat the baseline on the held-back scans with confidence (the paired
  bootstrap's lower bound of its Dice gain is above the run's ``min_gain``): promotable;
- ``worse``: it did not (kept for the record, never promoted automatically; it may still have
  a higher mean held-back Dice, just not surely);
- ``failed``: training diverged (NaN) or crashed; its weights are never loaded;
- ``imported``: not trained here: a checkpoint the user added (``propl models --add``, or
  "Add a model…" in the Retrain widget), e.g. their lab's own model, to predict with and to
  retrain from. It was never judged on this project's scans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from .revisions import fsync_dir

MODELS = "models"
VERSION_FILE = "version.json"
OUTCOMES = ("better", "worse", "failed", "imported")
SHIPPED = "shipped"
"""The name under which the model inside the package appears as a parent."""
_NAME = re.compile(r"v(\d{4,})")
_STALE_STAGING_S = 24 * 3600


@dataclass(frozen=True)
class ModelVersion:
    """One trained model version of a project (read from its ``version.json``)."""

    name: str
    path: Path
    outcome: str  # better | worse | failed | imported
    parent: str  # the version it started from, or "shipped"
    baseline: str  # the version that was current when it ran: the one it had to beat
    created: float
    held_back_score: float | None  # mDice (%) of this version on the held-back scans
    baseline_score: float | None  # mDice (%) of the baseline on the same scans
    trained_on: list[list[str]] = field(default_factory=list)  # [scan_id, task] pairs
    held_back: list[list[str]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    message: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # the whole version.json

    @property
    def usable(self) -> bool:
        """Whether it may become current (failed versions never do)."""
        return self.outcome != "failed" and (self.path / "model.safetensors").is_file()

    def describe(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f}"

        if self.outcome == "imported":
            tasks = ", ".join(self.tasks) or "no tasks"
            return f"{self.name} (imported): {self.parent}; tasks {tasks}"
        bound = self.record.get("held_back", {}).get("gain_lower_bound")
        sure = "" if bound is None else f" (gain's lower bound {bound:+.1f})"
        # "worse" is stored for any version not shown better (it may score a little higher
        # without that being sure): say so
        outcome = {"worse": "not better"}.get(self.outcome, self.outcome)
        return (
            f"{self.name} ({outcome}): held-back Dice {pct(self.held_back_score)} vs "
            f"{pct(self.baseline_score)} for {self.baseline}{sure}; from {self.parent}, "
            f"{len(self.trained_on)} labelled scans"
        )


def models_dir(root: Path) -> Path:
    return Path(root) / MODELS


def version_names(root: Path) -> list[str]:
    """Complete versions, oldest first."""
    folder = models_dir(root)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if _NAME.fullmatch(p.name)]
    return sorted(
        (n for n in names if (folder / n / VERSION_FILE).is_file()), key=lambda n: int(n[1:])
    )


def read_version(root: Path, name: str) -> ModelVersion:
    path = models_dir(root) / name
    try:
        rec = json.loads((path / VERSION_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"model version '{path}' is unreadable ({exc})") from exc
    return ModelVersion(
        name=name,
        path=path,
        outcome=str(rec.get("outcome", "failed")),
        parent=str(rec.get("parent", SHIPPED)),
        baseline=str(rec.get("baseline", rec.get("parent", SHIPPED))),
        created=float(rec.get("created", 0.0)),
        held_back_score=rec.get("held_back", {}).get("score"),
        baseline_score=rec.get("held_back", {}).get("baseline_score"),
        trained_on=[list(p) for p in rec.get("trained_on", [])],
        held_back=[list(p) for p in rec.get("held_back", {}).get("scans", [])],
        tasks=list(rec.get("tasks", [])),
        message=str(rec.get("message", "")),
        record=rec,
    )


def new_staging(root: Path) -> Path:
    """An empty folder in ``models/`` for a version being written (invisible until added).

    Its name carries the writing process (host and pid), so that what a killed run left is
    recognised and removed (:func:`clean_stale_staging`).
    """
    path = models_dir(root) / f".staging-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: assume it is running
    return True


def _abandoned(path: Path, now: float) -> bool:
    """A staging folder whose writer is gone: dead on this host, or untouched for a day."""
    parts = path.name.split("-")
    if len(parts) == 4 and parts[1] == _host_tag() and parts[2].isdigit():
        if int(parts[2]) != os.getpid() and not _pid_alive(int(parts[2])):
            return True
    return now - path.stat().st_mtime > _STALE_STAGING_S


def add_version(root: Path, staged: Path, record: dict[str, Any]) -> str:
    """Write ``record`` into ``staged`` and rename it to the next free ``vNNNN``; returns it.

    ``staged`` (from :func:`new_staging`) holds the checkpoint files, or nothing for a failed
    run. Safe beside other writers: the rename fails on an existing version, and then the next
    number is tried.
    """
    if record.get("outcome") not in OUTCOMES:
        raise ValueError(f"a version's outcome must be one of {OUTCOMES}, got {record!r}")
    folder = models_dir(root)
    existing = version_names(root)
    number = int(existing[-1][1:]) + 1 if existing else 1
    while True:
        name = f"v{number:04d}"
        record = record | {"name": name, "created": record.get("created", time.time())}
        atomic_write_bytes(staged / VERSION_FILE, json.dumps(record, indent=2).encode())
        try:
            os.rename(staged, folder / name)
        except OSError:  # taken (by another run) between listing and renaming
            if not (folder / name).exists():
                raise
            number += 1
            continue
        fsync_dir(folder)
        return name


def import_checkpoint(root: Path, source: str | Path, record: dict[str, Any]) -> str:
    """Add a checkpoint folder from outside the project as a new ``imported`` version.

    It is verified first (:func:`~propl.checkpoint.verify_checkpoint`: safetensors + JSON
    only; a pickle, a missing file, a config value out of bounds, weights holding NaN or
    infinity or not matching their config, or a failing smoke prediction are refused, naming
    the file) and stored again in half precision, like every version, and that copy is verified
    too; its task-fit statistics and shape floors come along when it has them (an invalid file
    is refused, naming it); nothing is written when a check fails.

    Raises:
        CheckpointError: ``source`` is not a usable checkpoint.
    """
    import torch

    from ..checkpoint import save_checkpoint, verify_checkpoint
    from ..task_fit import load_task_fit
    from ..task_shape import load_task_shapes

    source = Path(source)
    checkpoint = verify_checkpoint(source)
    # the statistics beside the weights come along (validated: a bad file is refused here)
    beside = [load_task_fit(source), load_task_shapes(source)]
    tasks = list(checkpoint.model.config.tasks)
    staged = new_staging(root)
    try:
        save_checkpoint(
            checkpoint.model,
            staged,
            checkpoint.metadata | {"imported_from": str(source.resolve())},
            dtype=torch.float16,
        )
        _verify_half_copy(staged, source)
        for side in beside:
            if side is not None:
                side.save(staged)
        return add_version(
            root,
            staged,
            {
                "outcome": "imported",
                "parent": str(source.resolve()),
                "baseline": "",
                "tasks": tasks,
                "model_tasks": tasks,
                "trained_on": [],
                "message": f"imported from {source.resolve()}",
            }
            | record,
        )
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _verify_half_copy(staged: Path, source: Path) -> None:
    """Check the half-precision copy of ``source`` (a weight beyond float16's range would turn
    into infinity).

    Raises:
        CheckpointError: the copy is unusable; the message names ``source``.
    """
    from ..checkpoint import verify_checkpoint
    from ..errors import CheckpointError

    try:
        verify_checkpoint(staged)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{source}: unusable once stored in half precision, as every version is ({exc})"
        ) from exc


def clean_stale_staging(root: Path) -> None:
    """Remove version folders a killed run left half-written: its process is gone (on this
    host), or the folder is older than a day. A run that is still going is never touched."""
    folder = models_dir(root)
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.glob(".staging-*"):
        try:
            if _abandoned(p, now):
                shutil.rmtree(p, ignore_errors=True)
        except FileNotFoundError:
            pass
