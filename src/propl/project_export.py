"""Export a project's masks for one task: files per scan plus one measurements CSV.

Used by ``propl export`` and the Review widget (which runs :func:`iter_export` in a worker).
"""

from __future__ import annotations

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
from .store import LABELLED, Project, Scan

EXPORT_FORMATS = ("tiff", "png", "nifti", "dicom-seg")


@dataclass
class ExportReport:
    """What an export wrote, and what it could not write (and why)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    csv: Path | None = None


def _stem(scan: Scan, task: str, taken: set[str]) -> str:
    stem = f"{scan.name}_{task}"
    if stem in taken:  # two scans with the same file name
        stem = f"{scan.name}-{scan.id[:8]}_{task}"
    taken.add(stem)
    return stem


def _mask_of(project: Project, scan_id: str, task: str, unreviewed: bool) -> tuple[Any, str, str]:
    """(mask, status, author) to export, or (None, reason, "") when there is nothing."""
    review = project.review(scan_id, task)
    if review is not None and review.status in LABELLED:
        return review.mask, review.status, review.author
    if review is not None:
        return None, f"{review.status} by {review.author}", ""
    if unreviewed:
        pred = project.prediction(scan_id, task)
        if pred is not None:
            return pred.mask, "unreviewed (prediction)", ""
    return None, "not reviewed", ""


def _write_files(
    mask: np.ndarray, scan: Scan, stem: str, out: Path, formats: Sequence[str], **kw: Any
) -> list[Path]:
    written = []
    if "tiff" in formats:
        written.append(write_mask_tiff(mask, out / f"{stem}.tif", **kw))
    if "png" in formats:
        written += write_mask_pngs(mask, out / "png", stem, **kw)
    if "nifti" in formats:
        written.append(
            write_nifti(mask, out / f"{stem}.nii.gz", scan.spacing_mm, scan.frame_time_ms, **kw)
        )
    return written


def iter_export(
    project: Project,
    task: str,
    out_dir: str | Path,
    formats: Sequence[str] = EXPORT_FORMATS,
    *,
    include_unreviewed: bool = False,
    overwrite: bool = False,
) -> Generator[tuple[int, int], None, ExportReport]:
    """Export scan by scan, yielding ``(done, total)``; returns an :class:`ExportReport`.

    Accepted and corrected scans are exported (and, with ``include_unreviewed``, the current
    prediction of scans nobody reviewed). DICOM-SEG is written for scans imported from a
    DICOM file where the standard allows it; otherwise the reason is in ``report.skipped``.
    The CSV has one row per frame: measurements in mm when the scan has a pixel spacing.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {EXPORT_FORMATS}")
    out = Path(out_dir)
    report, rows, taken = ExportReport(), [], set[str]()
    ids = project.scan_ids()
    for i, scan_id in enumerate(ids):
        scan = project.scan(scan_id)
        mask, status, author = _mask_of(project, scan_id, task, include_unreviewed)
        if mask is None:
            report.skipped.append(f"{scan.name}: {status}")
            yield (i + 1, len(ids))
            continue
        stem = _stem(scan, task, taken)
        report.written += _write_files(mask, scan, stem, out, formats, overwrite=overwrite)
        pred = project.prediction(scan_id, task)
        if "dicom-seg" in formats:
            version = pred.model_version if pred is not None else "unknown"
            _seg(scan, mask, task, version, out / f"{stem}.seg.dcm", overwrite, report)
        for f, frame in enumerate(mask):
            conf = float(pred.confidence[f]) if pred is not None else None
            row = {"scan": scan.name, "frame": f, "task": task, "status": status}
            row |= {"confidence": conf, "author": author}
            rows.append(row | measure_mask(frame, scan.spacing_mm))
        yield (i + 1, len(ids))
    report.csv = write_measurements_csv(rows, out / f"measurements_{task}.csv", overwrite=overwrite)
    return report


def _seg(
    scan: Scan,
    mask: np.ndarray,
    task: str,
    version: str,
    path: Path,
    overwrite: bool,
    report: ExportReport,
) -> None:
    source = Path(scan.source) if scan.source else None
    if source is None or scan.modality is None:
        report.skipped.append(f"{scan.name}: no DICOM-SEG (not imported from a DICOM file)")
        return
    if not source.is_file():
        report.skipped.append(f"{scan.name}: no DICOM-SEG (source '{source}' is gone)")
        return
    try:
        report.written.append(
            write_dicom_seg(
                mask,
                source,
                path,
                task_label=task,
                algorithm_version=version,
                overwrite=overwrite,
            )
        )
    except ExportError as exc:
        report.skipped.append(f"{scan.name}: no DICOM-SEG: {exc}")


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
