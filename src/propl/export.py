"""Writing predictions and masks to files: TIFF stacks, per-frame PNG, NIfTI, DICOM-SEG, CSV.

Every writer builds the whole file in memory, writes it beside its final name and renames it
(:func:`~propl.files.atomic_write_bytes`), so an interrupted export never leaves half a
file; creates missing parent folders; and refuses to replace an existing file unless
``overwrite=True``. Masks are ``(F, H, W)`` uint8 label maps (0 = background; 1 or a task's
label value = foreground), frames "as acquired" like :func:`propl.data.readers.read_scan`.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile
from PIL import Image

from .files import atomic_write_bytes

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

    from .inference import Prediction

FORMATS = ("tiff", "png")
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "scan",
    "frame",
    "task",
    "status",
    "confidence",
    "author",
    "area",
    "major_axis",
    "minor_axis",
    "circumference",
    "unit",
)


class ExportError(ValueError):
    """A mask cannot be exported in the requested format; the message says which file and why."""


def _tiff_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # without an explicit photometric, tifffile stores a (3, H, W) or (4, H, W) stack as RGB(A)
    tifffile.imwrite(buf, array, compression="zlib", photometric="minisblack")
    return buf.getvalue()


def _png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def check_masks(masks: np.ndarray, *, binary: bool = False) -> np.ndarray:
    """``masks`` as a ``(F, H, W)`` uint8 array, or ValueError naming what is wrong.

    Args:
        masks: ``(F, H, W)`` uint8 (or bool, converted to 0/1) label maps, ``F, H, W >= 1``.
        binary: also require every value to be 0 or 1.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or 0 in masks.shape:
        raise ValueError(f"masks must be a non-empty (F, H, W) array, got shape {masks.shape}")
    if masks.dtype == np.bool_:
        return masks.astype(np.uint8)
    if masks.dtype != np.uint8:
        raise ValueError(f"masks must be uint8 (or bool), got dtype {masks.dtype}")
    if binary and masks.max() > 1:
        values = ", ".join(str(v) for v in np.unique(masks)[:8])
        raise ValueError(f"masks must be binary (0/1) for this format, found values {{{values}}}")
    return masks


def _check_target(path: str | Path, overwrite: bool) -> Path:
    """The output path; FileExistsError when it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "output path is a folder", str(path))
    if path.exists() and not overwrite:
        raise FileExistsError(
            errno.EEXIST, "file exists; pass overwrite=True to replace it", str(path)
        )
    return path


def write_prediction(pred: Prediction, out_dir: Path, stem: str, fmt: str = "tiff") -> list[Path]:
    """Write ``<stem>_mask`` (uint8 labels 0/1) and ``<stem>_uncertainty``.

    TIFF: one stack each (uncertainty as float32 in [0, 1]). PNG: one file per frame
    (``<stem>_mask_f0000.png``; uncertainty scaled to 0-255 uint8). Every file is written
    beside its final name and renamed, so an interrupted run leaves no half-written file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt == "tiff":
        for name, array in (("mask", pred.mask), ("uncertainty", pred.uncertainty)):
            path = out_dir / f"{stem}_{name}.tif"
            atomic_write_bytes(
                path, _tiff_bytes(array.astype(np.float32 if name != "mask" else np.uint8))
            )
            written.append(path)
        return written
    unc8 = np.round(np.clip(pred.uncertainty, 0, 1) * 255).astype(np.uint8)
    single = len(pred.mask) == 1
    for i, (mask, unc) in enumerate(zip(pred.mask, unc8, strict=True)):
        suffix = "" if single else f"_f{i:04d}"
        for name, frame in (("mask", mask), ("uncertainty", unc)):
            path = out_dir / f"{stem}_{name}{suffix}.png"
            atomic_write_bytes(path, _png_bytes(frame))
            written.append(path)
    return written


def write_mask_tiff(masks: np.ndarray, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``(F, H, W)`` uint8 masks as one zlib-compressed TIFF stack, values kept as they are.

    Args:
        masks: ``(F, H, W)`` uint8 (or bool) label maps.
        path: the ``.tif`` file to write.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: bad shape or dtype.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    masks = check_masks(masks)
    path = _check_target(path, overwrite)
    atomic_write_bytes(path, _tiff_bytes(masks))
    return path


def write_mask_pngs(
    masks: np.ndarray, out_dir: str | Path, stem: str, *, overwrite: bool = False
) -> list[Path]:
    """Write one 8-bit grayscale PNG per frame, label values kept (so 0/1 masks look black).

    Files are ``<stem>_f0000.png``, ``<stem>_f0001.png``, ... or ``<stem>.png`` for a single
    frame. Every target is checked before the first is written, so a refusal writes nothing.

    Args:
        masks: ``(F, H, W)`` uint8 (or bool) label maps.
        out_dir: folder for the files (created when missing).
        stem: file name without suffix; must not contain a path separator.
        overwrite: replace existing files.

    Returns:
        The paths written, in frame order.

    Raises:
        ValueError: bad shape, dtype or stem.
        FileExistsError: a target exists and ``overwrite`` is False.
    """
    masks = check_masks(masks)
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    single = len(masks) == 1
    names = [f"{stem}.png"] if single else [f"{stem}_f{i:04d}.png" for i in range(len(masks))]
    paths = [_check_target(Path(out_dir) / name, overwrite) for name in names]
    for path, frame in zip(paths, masks, strict=True):
        atomic_write_bytes(path, _png_bytes(frame))
    return paths


def _nifti_bytes(
    masks: np.ndarray, spacing_mm: tuple[float, float] | None, frame_time_ms: float | None
) -> bytes:
    import nibabel as nib

    row_mm, col_mm = spacing_mm if spacing_mm is not None else (1.0, 1.0)
    affine = np.diag([col_mm, row_mm, 1.0, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(masks.transpose(2, 1, 0)), affine)
    img.header.set_data_dtype(np.uint8)
    # no patient frame exists for a 2-D scan: "aligned" (2) with an identity direction keeps
    # nibabel's affine and ITK's qform-based geometry the same, both just the pixel spacing
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    img.header.set_xyzt_units("mm" if spacing_mm is not None else "unknown", "msec")
    if frame_time_ms is not None:
        # pixdim[4] is NIfTI's time step; readers that look at 3 dimensions ignore it
        img.header["pixdim"][4] = frame_time_ms
    time = f" dt={frame_time_ms:g}ms" if frame_time_ms is not None else ""
    img.header["descrip"] = f"propl mask x=col y=row z=frame{time}".encode()[:80]
    return bytes(img.to_bytes())


def write_nifti(
    masks: np.ndarray,
    path: str | Path,
    spacing_mm: tuple[float, float] | None = None,
    frame_time_ms: float | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write masks as a NIfTI-1 image (gzip-compressed for ``.nii.gz``), values kept.

    Axis order: the NIfTI array is ``(W, H, F)``, i.e. ``masks.transpose(2, 1, 0)``, so
    x = column, y = row as NIfTI expects and the frames are the third axis (a cine opens as a
    stack of slices). ``pixdim = (col_mm, row_mm, 1)`` with spatial unit mm when
    ``spacing_mm`` is known (else 1 with unit "unknown"); ``frame_time_ms`` goes in
    ``pixdim[4]`` with time unit msec. sform and qform are the same diagonal matrix (code 2,
    origin 0): a 2-D scan has no patient orientation to record. Read back with
    ``np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)``.

    Args:
        masks: ``(F, H, W)`` uint8 (or bool) label maps.
        path: a ``.nii.gz`` (compressed) or ``.nii`` file.
        spacing_mm: ``(row, col)`` millimetres per pixel, e.g. ``ScanMeta.spacing_mm``.
        frame_time_ms: time between frames, e.g. ``ScanMeta.frame_time_ms``.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: bad shape, dtype, suffix, spacing or frame time.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    masks = check_masks(masks)
    name = Path(path).name.lower()
    if not name.endswith((".nii.gz", ".nii")):
        raise ValueError(f"a NIfTI file name must end in .nii.gz or .nii: {path}")
    if spacing_mm is not None and not (
        len(spacing_mm) == 2 and all(math.isfinite(s) and s > 0 for s in spacing_mm)
    ):
        raise ValueError(f"spacing_mm must be two positive (row, col) values: {spacing_mm}")
    if frame_time_ms is not None and not (math.isfinite(frame_time_ms) and frame_time_ms > 0):
        raise ValueError(f"frame_time_ms must be positive: {frame_time_ms}")
    path = _check_target(path, overwrite)
    data = _nifti_bytes(masks, spacing_mm, frame_time_ms)
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def write_dicom_seg(
    masks: np.ndarray,
    source_dicom: str | Path | None,
    path: str | Path,
    *,
    task_label: str,
    algorithm_version: str,
    algorithm_name: str = "ProPL",
    manufacturer: str = "ProPL",
    manufacturer_model_name: str = "napari-propl",
    device_serial_number: str = "none",
    series_number: int = 300,
    series_description: str | None = None,
    property_category: Code | None = None,
    property_type: Code | None = None,
    header: Mapping[str, Any] | None = None,
    keep_phi: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a binary DICOM Segmentation (one segment) of the frames of ``source_dicom``.

    The SEG joins the source's study, references the source image (and, for a multi-frame
    source, each frame) and records the algorithm as an automatic AI segmentation. It is
    de-identified by default (PS3.15 basic profile, UIDs retained: empty patient name, ID,
    birth date, sex, study date/time, accession number, referring physician; nothing of the
    institution or the source's equipment; ``PatientIdentityRemoved = YES``); with
    ``keep_phi`` it copies the source's Patient and Study attributes. The source is
    ``source_dicom`` when that file exists, else ``header``, the scan's stored header
    (:func:`propl.data.dicom.dicom_header`), so a SEG can be written after the file is gone.
    The segment's coded property defaults to SCT "Morphologically abnormal structure" /
    "Lesion"; pass ``property_category``/``property_type`` (``pydicom.sr.codedict.codes``)
    for an organ, e.g. ``codes.SCT.AnatomicalStructure`` / ``codes.SCT.ThyroidGland``.

    Which sources work (highdicom 0.28): any single-frame image; a multi-frame image only
    when it has a Frame of Reference with plane positions (CT/MR-like). Ultrasound cines
    have none, so they are refused with :class:`ExportError` (see :mod:`propl.export_dicom`).

    Args:
        masks: ``(F, H, W)`` uint8/bool in {0, 1}; ``F`` and ``(H, W)`` must match the source.
        source_dicom: the DICOM file the masks were predicted on (None: use ``header``).
        path: the SEG file to write (``.dcm``).
        task_label: the segment label, e.g. ``"thyroid nodule"`` (at most 64 characters).
        algorithm_version: version of the model or software that made the masks.
        algorithm_name, manufacturer, manufacturer_model_name, device_serial_number,
            series_number, series_description: recorded in the SEG's equipment/series.
        property_category, property_type: coded segment property (see above).
        header: the source's stored DICOM header, used when the file is None or gone.
        keep_phi: keep the patient and study data instead of de-identifying the SEG.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ExportError: the source (file and header) is missing, not DICOM, does not match the
            masks, or cannot carry a SEG (the message names the source and says why).
        ValueError: bad mask shape, dtype or values.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from .export_dicom import SegInfo, dicom_seg_bytes

    masks = check_masks(masks, binary=True)
    path = _check_target(path, overwrite)
    info = SegInfo(
        task_label=task_label,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        device_serial_number=device_serial_number,
        series_number=series_number,
        series_description=series_description,
        property_category=property_category,
        property_type=property_type,
    )
    source = Path(source_dicom) if source_dicom is not None else None
    data = dicom_seg_bytes(masks, source, info, header=header, keep_phi=keep_phi)
    atomic_write_bytes(path, data)
    return path


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


def write_measurements_csv(
    rows: Iterable[Mapping[str, Any]], path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write measurement rows as a UTF-8 CSV with the fixed header :data:`MEASUREMENT_COLUMNS`.

    Missing keys and None become empty cells (``frame`` is empty for a per-scan row); floats
    are written with full precision. Typically each row is ``{"scan": ..., "frame": ...,
    "task": ..., **measure_mask(mask, spacing)}``.

    Args:
        rows: one mapping per line, keys from :data:`MEASUREMENT_COLUMNS`.
        path: the ``.csv`` file to write.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: a row has a key that is not a column (named in the message).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = _check_target(path, overwrite)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(MEASUREMENT_COLUMNS)
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(MEASUREMENT_COLUMNS))
        if unknown:
            raise ValueError(
                f"row {i} has unknown columns {unknown}; allowed: {MEASUREMENT_COLUMNS}"
            )
        writer.writerow([_csv_cell(row.get(col)) for col in MEASUREMENT_COLUMNS])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path
