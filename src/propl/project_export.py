"""Export a project's masks for one task: files per scan plus one measurements CSV.

Used by ``propl export`` and the Review widget (which runs :func:`iter_export` in a worker).

Patient identity stays in the hospital: by default files and the CSV's ``scan`` column are
named by the scan's pseudonymous id (``names="id"``), not by the imported file's name (which
often holds the patient's name), and DICOM-SEG files are de-identified (``keep_phi=False``).

An export is all or nothing: everything is written into a temporary folder beside ``out_dir``
and moved into place at the end, so an export that stops half-way leaves nothing behind and
can simply be run again. One scan that cannot be read or written (a damaged scan in the
store, a writer's error) does not stop the others: it is listed in ``ExportReport.failed``
with the reason, and its files are left out.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .export import (
    ExportError,
    write_dicom_seg,
    write_mask_pngs,
    write_mask_tiff,
    write_measurements_csv,
    write_nifti,
)
from .measure import measure_mask
from .store import LABELLED, Project, Scan, StoreError, file_sha256

EXPORT_FORMATS = ("tiff", "png", "nifti", "dicom-seg")
NAME_SOURCES = ("id", "source")
"""``id``: files and CSV rows are named by the scan's pseudonymous id (the default);
``source``: by the scan's name in the project (usually the imported file's name)."""


@dataclass
class ExportReport:
    """What an export wrote, what it left out (and why), and what failed (and why).

    Attributes:
        written: the files written, in their final place.
        skipped: ``"<scan>: <reason>"`` for what there was nothing to export of, or that a
            format cannot hold (e.g. no DICOM-SEG for a PNG scan).
        failed: ``"<scan>: <error>"`` for scans that could not be read or written; their
            files are left out and the rest is exported.
        notes: ``"<scan>: <note>"`` for what was exported differently than asked, e.g. a
            stored pixel spacing that is not a finite number (exported as unknown).
        csv: the measurements CSV.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    csv: Path | None = None


@dataclass(frozen=True)
class _Options:
    task: str
    formats: Sequence[str]
    include_unreviewed: bool
    names: str
    keep_phi: bool


def _label(scan: Scan, names: str) -> str:
    """What the scan is called in file names, the CSV and the report."""
    return scan.id if names == "id" else scan.name


def _stem(scan: Scan, label: str, task: str, taken: set[str]) -> str:
    stem = f"{label}_{task}"
    if stem in taken:  # two scans with the same name
        stem = f"{label}-{scan.id[:8]}_{task}"
    taken.add(stem)
    return stem


def _mask_of(
    project: Project, scan_id: str, task: str, unreviewed: bool
) -> tuple[Any, str, str, tuple[str, ...]]:
    """(mask, status, author, frame states) to export, or (None, reason, "", ()) when there
    is nothing."""
    review = project.review(scan_id, task)
    if review is not None and review.status in LABELLED and review.mask is not None:
        # only the frames the annotator confirmed: the others (a cine's unreviewed frames,
        # drafts) are written empty, and their CSV rows say so without measurements
        mask = np.zeros_like(review.mask)
        mask[review.labelled_frames] = review.mask[review.labelled_frames]
        return mask, review.status, review.author, review.frames
    if review is not None and review.status == "draft" and unreviewed:
        pred = project.prediction(scan_id, task)
        if pred is not None:
            return pred.mask, "unreviewed (prediction)", "", ()
    if review is not None:
        return None, f"{review.status} by {review.author}", "", ()
    if unreviewed:
        pred = project.prediction(scan_id, task)
        if pred is not None:
            return pred.mask, "unreviewed (prediction)", "", ()
    return None, "not reviewed", "", ()


def _finite(scan: Scan, label: str, notes: list[str]) -> tuple[Any, Any]:
    """The scan's ``(spacing_mm, frame_time_ms)``, each None (unknown) unless finite and > 0.

    A value set to None here is noted in ``notes``.
    """
    spacing, frame_time = scan.spacing_mm, scan.frame_time_ms
    if spacing is not None and not (
        len(spacing) == 2 and all(math.isfinite(s) and s > 0 for s in spacing)
    ):
        notes.append(
            f"{label}: stored pixel spacing {tuple(spacing)} is not a positive number: "
            "exported as unknown (NIfTI spacing 1, measurements in px)"
        )
        spacing = None
    if frame_time is not None and not (math.isfinite(frame_time) and frame_time > 0):
        notes.append(f"{label}: stored frame time {frame_time} ms exported as unknown")
        frame_time = None
    return spacing, frame_time


def _write_files(
    mask: np.ndarray,
    stem: str,
    out: Path,
    formats: Sequence[str],
    geometry: tuple[Any, Any],
    files: list[Path],
) -> None:
    """Write the mask files, appending each one written to ``files``."""
    if "tiff" in formats:
        files.append(write_mask_tiff(mask, out / f"{stem}.tif"))
    if "png" in formats:
        files += write_mask_pngs(mask, out / "png", stem)
    if "nifti" in formats:
        files.append(write_nifti(mask, out / f"{stem}.nii.gz", *geometry))


def _source_file(scan: Scan) -> Path | None:
    """The scan's source file when it is still there and, if the scan has a stored header to
    fall back on, still the file that was imported (same SHA-256)."""
    if not scan.source or not Path(scan.source).is_file():
        return None
    source = Path(scan.source)
    if scan.header and scan.sha256 and file_sha256(source) != scan.sha256:
        return None
    return source


def _seg(
    scan: Scan,
    label: str,
    mask: np.ndarray,
    version: str,
    path: Path,
    opts: _Options,
    report: ExportReport,
    files: list[Path],
) -> None:
    """Write the scan's DICOM-SEG, or say in ``report.skipped`` why there is none."""
    if not scan.header and scan.modality is None:
        report.skipped.append(f"{label}: no DICOM-SEG (not imported from a DICOM file)")
        return
    source = _source_file(scan)
    if source is None and not scan.header:
        reason = "the source file is gone or changed and the scan has no stored DICOM header"
        report.skipped.append(f"{label}: no DICOM-SEG ({reason})")
        return
    try:
        path = write_dicom_seg(
            mask,
            source,
            path,
            header=scan.header,
            keep_phi=opts.keep_phi,
            task_label=opts.task,
            algorithm_version=version,
        )
    except ExportError as exc:
        report.skipped.append(f"{label}: no DICOM-SEG: {exc}")
        return
    files.append(path)


def _export_scan(
    project: Project,
    scan: Scan,
    out: Path,
    opts: _Options,
    taken: set[str],
    report: ExportReport,
    files: list[Path],
) -> list[dict[str, Any]]:
    """Write one scan's files into ``out`` (each appended to ``files``); its CSV rows."""
    label = _label(scan, opts.names)
    mask, status, author, states = _mask_of(project, scan.id, opts.task, opts.include_unreviewed)
    if mask is None:
        report.skipped.append(f"{label}: {status}")
        return []
    stem = _stem(scan, label, opts.task, taken)
    spacing, frame_time = _finite(scan, label, report.notes)
    _write_files(mask, stem, out, opts.formats, (spacing, frame_time), files)
    pred = project.prediction(scan.id, opts.task)
    if "dicom-seg" in opts.formats:
        version = pred.model_version if pred is not None else "unknown"
        _seg(scan, label, mask, version, out / f"{stem}.seg.dcm", opts, report, files)
    rows = []
    for f, frame in enumerate(mask):
        conf = float(pred.confidence[f]) if pred is not None else None
        state = states[f] if f < len(states) else status
        row = {"scan": label, "frame": f, "task": opts.task, "status": state}
        row |= {"confidence": conf, "author": author}
        confirmed = not states or state in LABELLED
        rows.append(row | (measure_mask(frame, spacing) if confirmed else {}))
    return rows


def _check_task(project: Project, task: str) -> None:
    known = [t.id for t in project.tasks]
    if task not in known:
        raise StoreError(
            f"project '{project.root}' has no task {task!r} (it has: {', '.join(known)})"
        )


def _export_into(
    project: Project, staging: Path, opts: _Options
) -> Generator[tuple[int, int], None, ExportReport]:
    """Export every scan into ``staging``, one failure per scan at most."""
    report, rows, taken = ExportReport(), [], set[str]()
    ids = project.scan_ids()
    for i, scan_id in enumerate(ids):
        files: list[Path] = []
        label = scan_id
        try:
            scan = project.scan(scan_id)
            label = _label(scan, opts.names)
            rows += _export_scan(project, scan, staging, opts, taken, report, files)
            report.written += files
        except Exception as exc:  # one scan's failure, whatever it is, must not stop the rest
            for path in files:
                path.unlink(missing_ok=True)
            report.failed.append(f"{label}: {type(exc).__name__}: {exc}")
        yield (i + 1, len(ids))
    report.csv = write_measurements_csv(rows, staging / f"measurements_{opts.task}.csv")
    return report


def _staging_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` (same file system, so moving out of it is a rename)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "export target is not a folder", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".export"))


def _publish(staging: Path, out: Path, overwrite: bool) -> dict[Path, Path]:
    """Move what ``staging`` holds into ``out``; ``{staged path: final path}``.

    Raises:
        FileExistsError: a file to write exists in ``out`` and ``overwrite`` is False
            (nothing is moved then).
    """
    moves = {p: out / p.relative_to(staging) for p in sorted(staging.rglob("*")) if p.is_file()}
    clashes = [str(target) for target in moves.values() if target.exists()]
    if clashes and not overwrite:
        more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
        raise FileExistsError(
            errno.EEXIST, f"file exists{more}; pass overwrite=True to replace", clashes[0]
        )
    if not out.exists():
        os.rename(staging, out)  # the whole export appears at once
        return moves
    for staged, target in moves.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    return moves


def iter_export(
    project: Project,
    task: str,
    out_dir: str | Path,
    formats: Sequence[str] = EXPORT_FORMATS,
    *,
    include_unreviewed: bool = False,
    overwrite: bool = False,
    names: str = "id",
    keep_phi: bool = False,
) -> Generator[tuple[int, int], None, ExportReport]:
    """Export scan by scan, yielding ``(done, total)``; returns an :class:`ExportReport`.

    Accepted and corrected scans are exported (and, with ``include_unreviewed``, the current
    prediction of scans nobody reviewed). DICOM-SEG is written for scans imported from a
    DICOM file where the standard allows it, from the source file when it is still there,
    else from the scan's stored DICOM header; otherwise the reason is in ``report.skipped``.
    The CSV has one row per frame: measurements in mm when the scan has a pixel spacing.

    Args:
        project: the project to export from.
        task: the task id whose masks to export.
        out_dir: the folder to write (created when missing); files are moved into it only
            when the export is complete.
        formats: some of :data:`EXPORT_FORMATS`.
        include_unreviewed: also export the prediction of scans nobody reviewed.
        overwrite: replace files of an earlier export in ``out_dir``.
        names: ``"id"`` (default) names files and CSV rows by the scan's pseudonymous id;
            ``"source"`` by the scan's name in the project (often the file name, which may
            hold the patient's name).
        keep_phi: keep the patient and study data in DICOM-SEG files (default: de-identified).

    Raises:
        ValueError: unknown formats or names.
        StoreError: the project has no such task.
        FileExistsError: a file to write exists in ``out_dir`` and ``overwrite`` is False;
            nothing is written then.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {EXPORT_FORMATS}")
    if names not in NAME_SOURCES:
        raise ValueError(f"unknown names {names!r}; choose one of {NAME_SOURCES}")
    _check_task(project, task)
    opts = _Options(task, tuple(formats), include_unreviewed, names, keep_phi)
    out = Path(out_dir)
    staging = _staging_folder(out)
    try:
        report = yield from _export_into(project, staging, opts)
        final = _publish(staging, out, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.written = [final[p] for p in report.written]
    report.csv = final[report.csv] if report.csv is not None else None
    return report


def export_project(
    project: Project,
    task: str,
    out_dir: str | Path,
    on_progress: Callable[[int, int], None] | None = None,
    **kw: Any,
) -> ExportReport:
    """:func:`iter_export` run to the end, reporting ``(done, total)`` to ``on_progress``."""
    gen = iter_export(project, task, out_dir, **kw)
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(done, total)
