"""Read ultrasound scans (DICOM, PNG, JPEG, BMP, TIFF, video) into arrays plus metadata.

Every reader returns frames "as acquired": ``(F, H, W)`` uint8/uint16 grayscale or
``(F, H, W, 3)`` uint8 RGB, with ``F >= 1``. The format is decided by the file's content
(magic bytes) when it is recognisable, else by its suffix; every failure is a
:class:`ReaderError` whose message names the file. :func:`read_folder` reads every scan of a
folder, reporting bad files instead of stopping at them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
_SUFFIX_FORMAT |= {".tif": "tiff", ".tiff": "tiff", ".dcm": "dicom", ".dicom": "dicom"}
_SUFFIX_FORMAT |= dict.fromkeys((".mp4", ".avi", ".mov", ".mkv"), "video")
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_SUFFIX_FORMAT)
_FORMAT_NAME = {
    "png": "PNG image",
    "jpeg": "JPEG image",
    "bmp": "BMP image",
    "tiff": "TIFF image",
    "dicom": "DICOM file",
    "video": "video file (MP4, MOV, AVI or MKV)",
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x1a\x45\xdf\xa3", "video"),  # Matroska / WebM (EBML)
)
# ISO base media / QuickTime: a box type at byte 4 ('ftyp' first in MP4, older MOV may not)
_QUICKTIME_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's "L"


class ReaderError(ValueError):
    """A scan or mask file cannot be read; the message always names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read '{path}': {reason}")


class ReaderFileNotFoundError(ReaderError, FileNotFoundError):
    """The file does not exist (catch it as ``ReaderError`` or ``FileNotFoundError``)."""


@dataclass(frozen=True)
class ScanMeta:
    """What a reader learned about a scan besides its pixels.

    Attributes:
        path: the file read.
        format: ``"png" | "jpeg" | "bmp" | "tiff" | "dicom" | "video"``.
        n_frames: ``F``, the first axis of the returned frames.
        is_color: frames are ``(F, H, W, 3)`` RGB.
        spacing_mm: ``(row, col)`` millimetres per pixel from a DICOM calibration (ultrasound
            regions or PixelSpacing), else None; a PNG/JPEG DPI is a print resolution, not this.
        frame_time_ms: time between frames in milliseconds when known.
        modality: DICOM Modality (e.g. ``"US"``), None for other formats.
        photometric: the file's photometric interpretation (DICOM), Pillow mode or the
            video's pixel format (e.g. ``"yuv420p"``; its frames are still returned as RGB).
        extra: small JSON-serialisable extras (e.g. SOPClassUID, Rows, Columns; the video's
            container, codec and declared frame count).
        header: DICOM only: the header as JSON-serialisable ``{keyword: value}``, without
            patient, staff and institution identity unless read with ``keep_phi=True``
            (see :func:`propl.data.dicom.dicom_header`).
    """

    path: str
    format: str
    n_frames: int
    is_color: bool
    spacing_mm: tuple[float, float] | None = None
    frame_time_ms: float | None = None
    modality: str | None = None
    photometric: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)


def _sniff(head: bytes) -> str | None:
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[4:8] in _QUICKTIME_BOXES or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"
    return None


def _detect_format(path: Path) -> str:
    """The format to read ``path`` as: content first, suffix second."""
    if not path.exists():
        raise ReaderFileNotFoundError(path, "no such file")
    if path.is_dir():
        raise ReaderError(path, "is a directory, not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise ReaderError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    if not head:
        raise ReaderError(path, "file is empty")
    sniffed = _sniff(head)
    by_suffix = _SUFFIX_FORMAT.get(path.suffix.lower())
    if sniffed is not None:
        return sniffed
    if by_suffix == "dicom":
        raise ReaderError(path, "not a DICOM file (no 'DICM' marker at byte 128)")
    if by_suffix is not None:
        raise ReaderError(path, f"not a {_FORMAT_NAME[by_suffix]} (unrecognised content)")
    raise ReaderError(
        path,
        f"unsupported file type {path.suffix or '(no suffix)'!r} and "
        f"unrecognised content; supported: {', '.join(SUPPORTED_SUFFIXES)}",
    )


def _check_pixels(path: Path, n_pixels: int, max_pixels: int) -> None:
    if n_pixels <= 0:
        raise ReaderError(path, "the image has no pixels")
    if n_pixels > max_pixels:
        raise ReaderError(path, f"too many pixels ({n_pixels:,} > max_pixels={max_pixels:,})")


def _to_storage_dtype(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16 kept; bool -> 0/255 uint8; other ints shifted to start at 0 (and
    min-max scaled to uint16 when the range exceeds 16 bits); floats min-max scaled to uint16."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535:
            return arr.astype(np.uint8 if hi <= 255 else np.uint16)
        if hi - lo <= 65535:
            return (arr.astype(np.int64) - lo).astype(np.uint16)
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    flo, fhi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0, 0)
    scaled = (np.where(finite, arr, flo) - flo) / (fhi - flo if fhi > flo else 1.0)
    return np.round(scaled * 65535).astype(np.uint16)


def _rgb_to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    """RGB frames to uint8; ``bits`` is the significant depth of a wider integer input."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and bits > 8:
        return (arr.astype(np.uint32) >> (bits - 8)).clip(0, 255).astype(np.uint8)
    arr = _to_storage_dtype(arr)
    return arr if arr.dtype == np.uint8 else (arr >> 8).astype(np.uint8)


# -- Pillow: PNG, JPEG, BMP ---------------------------------------------------------------


def _pil_frame(im: Any) -> np.ndarray:
    """One Pillow frame as (H, W) or (H, W, 3); alpha dropped, palettes expanded."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGB")
        rgb = np.asarray(im)
        gray = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        return np.ascontiguousarray(rgb[..., 0]) if gray else rgb
    if mode in ("LA", "PA", "La"):
        im = im.convert("L")
    elif mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"):
        im = im.convert("RGB")
    return _to_storage_dtype(np.asarray(im))


def _read_pil(path: Path, fmt: str, max_pixels: int) -> tuple[np.ndarray, ScanMeta]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            n_frames = int(getattr(im, "n_frames", 1))
            _check_pixels(path, n_frames * im.width * im.height, max_pixels)
            mode = im.mode
            dpi = im.info.get("dpi")
            frames = [_pil_frame(frame) for frame in ImageSequence.Iterator(im)]
    except ReaderError:
        raise
    except Image.DecompressionBombError as exc:
        raise ReaderError(path, f"too many pixels for Pillow ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ReaderError(path, f"truncated or corrupt {_FORMAT_NAME[fmt]} ({exc})") from exc
    if len({f.shape for f in frames}) != 1:
        raise ReaderError(path, "frames of different sizes or colour modes")
    arr = np.stack(frames)
    is_color = arr.ndim == 4
    if is_color:
        arr = _rgb_to_uint8(arr, 16 if arr.dtype == np.uint16 else 8)
    extra: dict[str, Any] = {"mode": mode}
    if dpi:
        # a print resolution (72/96 dpi from the exporting software), not the probe's pixel
        # spacing: kept for the record, never used for mm measurements or layer scales
        extra["dpi"] = [float(d) for d in dpi]
    meta = ScanMeta(str(path), fmt, arr.shape[0], is_color, photometric=mode, extra=extra)
    return arr, meta


# -- tifffile: TIFF ------------------------------------------------------------------------


def _tiff_to_frames(path: Path, arr: np.ndarray, axes: str) -> np.ndarray:
    """A tifffile series array to (F, H, W) or (F, H, W, 3) using its axes string."""
    if "S" in axes and arr.shape[axes.index("S")] in (3, 4):
        arr = np.moveaxis(arr, axes.index("S"), -1)[..., :3]
        return arr.reshape(-1, *arr.shape[-3:])
    if "S" in axes:  # one or two samples (e.g. gray + alpha): keep the first
        arr = np.take(arr, 0, axis=axes.index("S"))
    if arr.ndim < 2:
        raise ReaderError(path, f"not an image (shape {arr.shape})")
    return arr.reshape(-1, *arr.shape[-2:])


def _read_tiff(path: Path, max_pixels: int) -> tuple[np.ndarray, ScanMeta]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            n_pixels = int(np.prod([n for n, a in zip(shape, axes, strict=True) if a != "S"]))
            _check_pixels(path, n_pixels, max_pixels)
            arr = series.asarray()
            photometric = getattr(getattr(tif.pages[0], "photometric", None), "name", None)
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise ReaderError(path, f"truncated or corrupt TIFF image ({exc})") from exc
    frames = _tiff_to_frames(path, arr, axes)
    is_color = frames.ndim == 4
    frames = _rgb_to_uint8(frames, 16) if is_color else _to_storage_dtype(frames)
    meta = ScanMeta(
        str(path),
        "tiff",
        frames.shape[0],
        is_color,
        photometric=photometric,
        extra={"axes": axes, "shape": list(shape), "dtype": str(arr.dtype)},
    )
    return frames, meta


# -- pydicom: DICOM ------------------------------------------------------------------------


def _dicom_pixels(path: Path, ds: Any) -> np.ndarray:
    """Frames as (F, H, W) uint8/uint16 or (F, H, W, 3) uint8 RGB."""
    from .dicom import decode_pixels

    arr, samples, bits = decode_pixels(path, ds)
    if arr.ndim == (3 if samples == 3 else 2):
        arr = arr[np.newaxis]
    if samples == 3:
        return _rgb_to_uint8(arr, bits)
    return _to_storage_dtype(arr)


def _read_dicom(path: Path, max_pixels: int, keep_phi: bool) -> tuple[np.ndarray, ScanMeta]:
    import pydicom

    from .dicom import scan_meta_fields  # imports this module: import it late

    try:
        ds = pydicom.dcmread(path, defer_size="1 MB")
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        n_frames = int(ds.get("NumberOfFrames") or 1)
        has_pixels = "PixelData" in ds
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # InvalidDicomError, EOFError, struct.error, ValueError, ...
        raise ReaderError(path, f"truncated or corrupt DICOM file ({exc})") from exc
    if not has_pixels:
        raise ReaderError(path, "no pixel data (PixelData is missing, or the file is truncated)")
    _check_pixels(path, n_frames * rows * cols, max_pixels)
    arr = _dicom_pixels(path, ds)
    if arr.size == 0:
        raise ReaderError(path, "the DICOM pixel data is empty")
    fields = scan_meta_fields(ds, keep_phi=keep_phi)
    return arr, ScanMeta(str(path), "dicom", arr.shape[0], arr.ndim == 4, **fields)


# -- public API ----------------------------------------------------------------------------


def read_scan(
    path: str | Path, *, max_pixels: int = 2_000_000_000, keep_phi: bool = False
) -> tuple[np.ndarray, ScanMeta]:
    """Read a scan file into frames and metadata.

    The format comes from the content (DICOM 'DICM' marker, PNG/JPEG/BMP/TIFF magic bytes,
    MP4/MOV 'ftyp', AVI 'RIFF', Matroska EBML), so a file with an unusual suffix still reads;
    a supported suffix with other content fails.
    DICOM: YBR colour converted to RGB, palette colour expanded, MONOCHROME1 inverted,
    spacing from the ultrasound regions (cm -> mm) or PixelSpacing, the de-identified header
    in ``meta.header``. Signed or wider-than-16-bit integers are shifted to start at 0
    (uint16); floats are min-max scaled to uint16. Video (PyAV): every frame as RGB.

    Args:
        path: the file.
        max_pixels: refuse scans with more than this many pixels ``F * H * W``; checked
            from the header before the pixels are decoded (for a video whose container does
            not declare its frame count: while decoding).
        keep_phi: DICOM: keep patient, staff and institution identity in ``meta.header``.

    Returns:
        ``frames`` ``(F, H, W)`` uint8/uint16 or ``(F, H, W, 3)`` uint8 RGB (``F >= 1``),
        and its :class:`ScanMeta`.

    Raises:
        ReaderError: missing (:class:`ReaderFileNotFoundError`), empty, truncated, corrupt,
            unsupported or too large files; a directory; a DICOM without pixel data or
            without an installed decoder; a video without frames or without PyAV. The
            message names the file.
    """
    path = Path(path)
    fmt = _detect_format(path)
    if fmt == "dicom":
        frames, meta = _read_dicom(path, max_pixels, keep_phi)
    elif fmt == "video":
        from .video import read_video  # imports this module: import it late

        frames, meta = read_video(path, max_pixels)
    elif fmt == "tiff":
        frames, meta = _read_tiff(path, max_pixels)
    else:
        frames, meta = _read_pil(path, fmt, max_pixels)
    if frames.size == 0:
        raise ReaderError(path, "the image has no pixels")
    return frames, meta


def iter_scan_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """The scan files of a folder, sorted by path; empty when there are none.

    A file counts when its suffix is in :data:`SUPPORTED_SUFFIXES` (whatever its content:
    :func:`read_folder` reports the broken ones) or, whatever its suffix (none, or a UID-like
    ``.1234``), when its content is DICOM. Hidden files and folders (``.name``) and
    ``DICOMDIR`` indexes are skipped; symbolic links to folders are not followed.

    Args:
        folder: the folder to list.
        recursive: also list sub-folders.

    Raises:
        ReaderError: the folder is missing (:class:`ReaderFileNotFoundError`) or a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ReaderFileNotFoundError(folder, "no such folder")
    if not folder.is_dir():
        raise ReaderError(folder, "not a folder")
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        for name in files:
            path = Path(root, name)
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            if path.suffix.lower() in _SUFFIX_FORMAT or _is_dicom(path):
                found.append(path)
    return sorted(found, key=str)


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


ScanResult = tuple[Path, np.ndarray, ScanMeta] | tuple[Path, ReaderError]


def read_folder(
    folder: str | Path,
    *,
    recursive: bool = True,
    max_pixels: int = 2_000_000_000,
    keep_phi: bool = False,
) -> Iterator[ScanResult]:
    """Read every scan file of a folder (:func:`iter_scan_files`), one at a time.

    The folder is checked and listed when this is called; the files are read lazily.

    Args:
        folder: the folder to read.
        recursive: also read sub-folders.
        max_pixels: as :func:`read_scan`, per file.
        keep_phi: as :func:`read_scan`.

    Returns:
        An iterator of ``(path, frames, meta)`` for each file read, or ``(path, error)`` for
        a file that cannot be read, so a caller can skip it and name it.

    Raises:
        ReaderError: the folder is missing (:class:`ReaderFileNotFoundError`), not a folder,
            or holds no scan file.
    """
    paths = iter_scan_files(folder, recursive=recursive)
    if not paths:
        raise ReaderError(
            folder, f"no scan files in the folder (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    return _read_each(paths, max_pixels, keep_phi)


def _read_each(paths: list[Path], max_pixels: int, keep_phi: bool) -> Iterator[ScanResult]:
    for path in paths:
        try:
            frames, meta = read_scan(path, max_pixels=max_pixels, keep_phi=keep_phi)
        except ReaderError as exc:
            yield path, exc
        else:
            yield path, frames, meta


def to_grayscale(frames: np.ndarray) -> np.ndarray:
    """Frames as float32 grayscale in [0, 1].

    uint8 is divided by 255; uint16 by the array's maximum (so 10/12-bit data stored in 16
    bits fills [0, 1]; the same factor for all frames; an all-zero array stays 0); floats are
    clipped to [0, 1]; bool maps to {0, 1}. RGB uses the BT.601 luminance weights
    (0.299, 0.587, 0.114) on the channels scaled as above.

    Args:
        frames: ``(F, H, W)`` grayscale or ``(F, H, W, 3)`` RGB.

    Returns:
        ``(F, H, W)`` float32.
    """
    frames = np.asarray(frames)
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"expected (F, H, W) or (F, H, W, 3) frames, got shape {frames.shape}")
    if frames.dtype == np.uint8:
        out = frames.astype(np.float32) / np.float32(255)
    elif frames.dtype == np.bool_ or np.issubdtype(frames.dtype, np.integer):
        top = float(frames.max()) if frames.size else 0.0
        out = frames.astype(np.float32) / np.float32(top if top > 0 else 1.0)
    else:
        out = np.clip(frames.astype(np.float32), 0.0, 1.0)
    if out.ndim == 4:
        out = out @ LUMINANCE
    return np.clip(out, 0.0, 1.0, out=out)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-frame mask file; any non-zero pixel (in any channel) becomes 1.

    Returns:
        ``(H, W)`` uint8 in {0, 1}.

    Raises:
        ReaderError: as :func:`read_scan`, and for masks with more than one frame.
    """
    frames, meta = read_scan(path)
    if meta.n_frames != 1:
        raise ReaderError(path, f"a mask must have one frame, this file has {meta.n_frames}")
    mask = frames[0] != 0
    if mask.ndim == 3:
        mask = mask.any(axis=-1)
    return mask.astype(np.uint8)
