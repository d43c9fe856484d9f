"""``propl check``: find every damaged part of a project, and roll pointers back to the last
intact revision where one exists.

A scan's image cannot be repaired here (import the file again); a damaged prediction or
review revision can, when an older revision of the same slot is intact: the slot's pointer is
moved back to it (the damaged revision stays on disk for inspection). Reviews keep every
revision, predictions the last two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import revisions as rev
from .integrity import CHECKSUMS, DamagedError, StoreError, verify
from .project import Project

KINDS = ("pred", "labels")
_REQUIRED = {
    "pred": ("confidence", "model_version", "time"),
    "labels": ("status", "author", "time", "edited_pixels", "seconds"),
}


@dataclass(frozen=True)
class Damage:
    """One damaged part: the scan, the file, why, and what was done about it."""

    scan_id: str | None
    file: str
    reason: str
    repaired: str = ""  # e.g. "pointer moved back to r000003"

    def describe(self) -> str:
        where = f"scan {self.scan_id}: " if self.scan_id else ""
        fix = f" -> repaired: {self.repaired}" if self.repaired else ""
        return f"{where}{self.file}: {self.reason}{fix}"


@dataclass
class CheckReport:
    scans: int = 0
    revisions: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Damage]:
        return [d for d in self.damage if not d.repaired]


def check_project(project: Project, repair: bool = False) -> CheckReport:
    """Read and verify every scan, and every current prediction and review of the project.

    Args:
        project: open for writing when ``repair``.
        repair: move a damaged slot's pointer back to its newest intact revision.
    """
    report = CheckReport()
    for scan_id in project.scan_ids():
        report.scans += 1
        try:
            project.image(scan_id)
        except DamagedError as exc:
            report.damage.append(Damage(scan_id, exc.file, exc.reason))
            continue
        for kind in KINDS:
            folder = project.root / "scans" / scan_id / kind
            tasks = (
                sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
            )
            for task in tasks:
                damage = _check_slot(project, scan_id, kind, task, repair)
                report.revisions += 1
                if damage is not None:
                    report.damage.append(damage)
    return report


def _check_slot(
    project: Project, scan_id: str, kind: str, task: str, repair: bool
) -> Damage | None:
    slot = f"scans/{scan_id}/{kind}/{task}"
    try:
        current = rev.current(project._store, slot)  # noqa: SLF001 - the store's own checker
    except Exception as exc:
        current, pointer_problem = None, f"the pointer is unreadable ({exc})"
    else:
        pointer_problem = "" if current else "the slot has no current revision"
    problem = pointer_problem or _revision_problem(project.root, slot, current or "", kind)
    if not problem:
        return None
    file = f"{slot}/zarr.json" if pointer_problem else f"{slot}/{current}"
    fix = ""
    if repair:
        older = [r for r in rev.revisions(project.root / slot) if not current or r < current]
        for name in reversed(older):
            if not _revision_problem(project.root, slot, name, kind):
                rev.point(project._store, slot, name)  # noqa: SLF001
                fix = f"pointer moved back to {name}"
                break
    return Damage(scan_id, file, problem, fix)


def _revision_problem(root: Path, slot: str, name: str, kind: str) -> str:
    """Why revision ``name`` of ``slot`` is not intact ("" when it is)."""
    path = root / slot / name
    if not path.is_dir():
        return f"the pointer names a missing revision {name!r}"
    try:
        group = zarr.open_group(path, mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
        missing = [k for k in _REQUIRED[kind] if k not in attrs]
        if missing:
            return f"missing {', '.join(missing)}"
        sums = attrs.get(CHECKSUMS)
        names = list(sums) if isinstance(sums, dict) else [n for n, _ in group.arrays()]
        for array in names:
            node = group[array]
            if not isinstance(node, zarr.Array):
                return f"{array}: a group where an array belongs"
            data = np.asarray(node[...])
            problem = verify(data, sums.get(array) if isinstance(sums, dict) else None)
            if problem:
                return f"{array}: {problem}"
    except StoreError:
        raise
    except Exception as exc:  # zarr, JSON, codecs: unreadable
        return f"unreadable ({type(exc).__name__}: {exc})"
    return ""
