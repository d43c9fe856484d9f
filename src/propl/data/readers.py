"""Read ultrasound scans (DICOM, PNG, JPEG, BMP, TIFF, video) into arrays plus metadata.

Every reader returns frames "as acquired": ``(F, H, W)`` uint8/uint16 grayscale or
``(F, H, W, 3)`` uint8 RGB, with ``F >= 1``. The format is decided by the file's content
(magic bytes) when it is recognisable, else by its suffix; every failure is a
:class:`ReaderError` whose message names the file. :func:`read_folder` reads every scan of a
folder, reporting bad files instead of stopping at them.

Before decoding, the size a file declares (frames x rows x columns x bytes per pixel, channels
included) is checked against :data:`MAX_SCAN_BYTES` (1 GiB; raise it with the environment
variable ``PROPL_MAX_SCAN_BYTES`` or ``read_scan(..., max_bytes=...)``) and a TIFF's page count
against :data:`MAX_TIFF_PAGES` (``PROPL_MAX_TIFF_PAGES``, ``max_pages=``), so a small crafted
file cannot make the reader allocate gigabytes or run for minutes. What a file says that cannot
be right (a spacing that is text, NaN or infinite, ...) is ignored with a
:class:`ReaderWarning` naming the file.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..region import Region

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

MAX_SCAN_BYTES: int = 1 << 30
"""Default limit on a scan's decoded size in bytes (1 GiB): about 1,400 RGB frames of 800x600.

Checked from the header before decoding. Raise it with the environment variable
``PROPL_MAX_SCAN_BYTES`` (bytes, e.g. ``4000000000``) or ``read_scan(..., max_bytes=...)``.
"""
MAX_SCAN_BYTES_ENV = "PROPL_MAX_SCAN_BYTES"
MAX_TIFF_PAGES: int = 10_000
"""Default limit on the pages of a TIFF (counted before any is decoded): tifffile needs
minutes to sort tens of thousands of pages into series. Raise it with the environment variable
``PROPL_MAX_TIFF_PAGES`` or ``read_scan(..., max_pages=...)``."""
MAX_TIFF_PAGES_ENV = "PROPL_MAX_TIFF_PAGES"
# Decoded bytes per pixel of each Pillow mode as _pil_frame returns it (others become RGB)
_PIL_BYTES = {"1": 1, "L": 1, "LA": 1, "La": 1, "P": 3, "PA": 3, "I;16": 2, "I": 4, "F": 4}
_PIL_BYTES |= {"I;16B": 2, "I;16L": 2}


class ReaderError(ValueError):
    """A scan or mask file cannot be read; the message always names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read '{path}': {reason}")


class ReaderFileNotFoundError(ReaderError, FileNotFoundError):
    """The file does not exist (catch it as ``ReaderError`` or ``FileNotFoundError``)."""


class ReaderWarning(UserWarning):
    """A scan was read, but part of what it says was ignored or needs care; names the file."""


def warn_file(path: str | Path, message: str) -> None:
    """Issue a :class:`ReaderWarning` ``"'<path>': <message>"``."""
    warnings.warn(f"'{path}': {message}", ReaderWarning, stacklevel=3)


def _size(n_bytes: int) -> str:
    """``n_bytes`` for people: ``"1.0 GiB"``, ``"12.5 MiB"``, ``"700 bytes"``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} bytes"


@dataclass(frozen=True)
class SizeLimits:
    """How large a scan may be, checked before decoding (see :func:`size_limits`).

    Attributes:
        max_bytes: the decoded size in bytes (:data:`MAX_SCAN_BYTES` by default).
        max_pages: the pages of a TIFF (:data:`MAX_TIFF_PAGES` by default).
        max_pixels: the pixels ``F * H * W`` (channels not counted); None: no such limit.
    """

    max_bytes: int
    max_pages: int
    max_pixels: int | None = None

    def check(self, path: Path, n_pixels: int, bytes_per_pixel: int) -> None:
        """Raise :class:`ReaderError` when ``n_pixels`` of ``bytes_per_pixel`` are too many.

        Raises:
            ReaderError: no pixels, more than ``max_pixels``, or more than ``max_bytes``.
        """
        if n_pixels <= 0:
            raise ReaderError(path, "the image has no pixels")
        if self.max_pixels is not None and n_pixels > self.max_pixels:
            raise ReaderError(
                path, f"too many pixels ({n_pixels:,} > max_pixels={self.max_pixels:,})"
            )
        n_bytes = n_pixels * bytes_per_pixel
        if n_bytes > self.max_bytes:
            what = f"its pixels take {_size(n_bytes)} ({n_bytes:,} bytes) decoded"
            raise ReaderError(path, self.too_large(what))

    def too_large(self, what: str) -> str:
        """The message for a file ``what`` says is too large: the limit, how to raise it."""
        return (
            f"too large: {what}, over the limit of "
            f"{_size(self.max_bytes)} ({self.max_bytes:,} bytes); to read it anyway, raise "
            f"the limit with the environment variable {MAX_SCAN_BYTES_ENV}=<bytes> or "
            "read_scan(..., max_bytes=<bytes>)"
        )


def size_limits(
    max_bytes: int | None = None, max_pages: int | None = None, max_pixels: int | None = None
) -> SizeLimits:
    """The limits given, else those of the environment, else the defaults.

    Args:
        max_bytes: else ``$PROPL_MAX_SCAN_BYTES``, else :data:`MAX_SCAN_BYTES`.
        max_pages: else ``$PROPL_MAX_TIFF_PAGES``, else :data:`MAX_TIFF_PAGES`.
        max_pixels: None: no limit on the pixel count.
    """
    if max_bytes is None:
        max_bytes = _env_limit(MAX_SCAN_BYTES_ENV, MAX_SCAN_BYTES)
    if max_pages is None:
        max_pages = _env_limit(MAX_TIFF_PAGES_ENV, MAX_TIFF_PAGES)
    return SizeLimits(int(max_bytes), int(max_pages), max_pixels)


def _env_limit(name: str, default: int) -> int:
    """A positive whole number from the environment (``4e9`` and ``4_000_000_000`` work)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value < float("inf")):
        warnings.warn(
            f"{name}={text!r} is not a positive whole number: using the default {default:,}",
            ReaderWarning,
            stacklevel=4,
        )
        return default
    return int(value)


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
        burned_in_annotation: DICOM BurnedInAnnotation is "YES": the pixels may show the
            patient's name or other identifying text (read with a :class:`ReaderWarning`).
        region: the imaging region of the frames (:class:`propl.region.Region`), from the
            DICOM ultrasound regions or detected (:func:`propl.region.detect_region`); None:
            the whole frame.
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
    burned_in_annotation: bool = False
    region: Region | None = None


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


def _read_pil(path: Path, fmt: str, limits: SizeLimits) -> tuple[np.ndarray, ScanMeta]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            n_frames = int(getattr(im, "n_frames", 1))
            per_pixel = _PIL_BYTES.get(im.mode, 3)
            limits.check(path, n_frames * im.width * im.height, per_pixel)
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


def _check_pages(path: Path, tif: Any, max_pages: int) -> None:
    """Refuse a TIFF of more than ``max_pages`` pages; counting them decodes none."""
    n_pages = len(tif.pages)
    if n_pages > max_pages:
        raise ReaderError(
            path,
            f"too many pages ({n_pages:,}, over the limit of {max_pages:,}); to read it "
            f"anyway, raise the limit with the environment variable {MAX_TIFF_PAGES_ENV}="
            "<pages> or read_scan(..., max_pages=<pages>)",
        )


def _read_tiff(path: Path, limits: SizeLimits) -> tuple[np.ndarray, ScanMeta]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            _check_pages(path, tif, limits.max_pages)
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            if np.issubdtype(series.dtype, np.complexfloating):
                raise ReaderError(path, f"complex pixel values ({series.dtype}): not an image")
            others = len(tif.series) - 1
            n_pixels = int(np.prod([n for n, a in zip(shape, axes, strict=True) if a != "S"]))
            per_pixel = max(1, int(np.prod(shape)) // max(n_pixels, 1))
            limits.check(path, n_pixels, per_pixel * np.dtype(series.dtype).itemsize)
            arr = series.asarray()
            photometric = getattr(getattr(tif.pages[0], "photometric", None), "name", None)
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise ReaderError(path, f"truncated or corrupt TIFF image ({exc})") from exc
    if others:
        warn_file(
            path,
            f"holds {others + 1} images of different shapes or types; read the first "
            f"({' x '.join(map(str, shape))}) and left out "
            + ("the other" if others == 1 else f"the other {others}"),
        )
    if np.issubdtype(arr.dtype, np.floating) and not (finite := np.isfinite(arr)).all():
        warn_file(
            path,
            f"{arr.size - int(finite.sum()):,} of {arr.size:,} pixel values are not finite "
            "numbers (NaN or infinite): read as black",
        )
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


def _check_inflated(path: Path, limits: SizeLimits) -> None:
    """Refuse a deflated DICOM whose dataset inflates past ``limits.max_bytes``.

    pydicom inflates such a file whole into memory before reading a tag, so a few megabytes
    could claim gigabytes; the inflated size is counted here, in bounded pieces, first.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    with path.open("rb") as fh:
        try:
            read_preamble(fh, False)
            tsyntax = _read_file_meta_info(fh).get("TransferSyntaxUID")
        except Exception:  # a broken file meta: dcmread says what is wrong
            return
        if tsyntax != DeflatedExplicitVRLittleEndian:
            return
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := fh.read(1 << 20):
            while chunk:
                try:
                    total += len(inflater.decompress(chunk, 1 << 24))
                except zlib.error:  # corrupt: dcmread says so
                    return
                if total > limits.max_bytes:
                    raise ReaderError(
                        path, limits.too_large(f"its dataset inflates to more than {_size(total)}")
                    )
                chunk = inflater.unconsumed_tail


def _dicom_bytes_per_pixel(ds: Any) -> int:
    """Decoded bytes per pixel: samples x bytes per sample; 6 more for palette colour."""
    samples = int(ds.get("SamplesPerPixel") or 1)
    per_sample = max(1, -(-int(ds.get("BitsAllocated") or 8) // 8))
    palette = str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
    return samples * per_sample + (6 if palette else 0)


def _burned_in(path: Path, ds: Any) -> bool:
    """BurnedInAnnotation is "YES" (warned): the pixels may show who the patient is."""
    if str(ds.get("BurnedInAnnotation") or "").strip().upper() != "YES":
        return False
    warn_file(
        path,
        "BurnedInAnnotation is YES: the pixels may show the patient's name or other "
        "identifying text; check the frames before sharing them",
    )
    return True


def _read_dicom(path: Path, limits: SizeLimits, keep_phi: bool) -> tuple[np.ndarray, ScanMeta]:
    import pydicom

    from .dicom import scan_meta_fields  # imports this module: import it late

    _check_inflated(path, limits)
    try:
        ds = pydicom.dcmread(path, defer_size="1 MB")
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        n_frames = int(ds.get("NumberOfFrames") or 1)
        per_pixel = _dicom_bytes_per_pixel(ds)
        has_pixels = "PixelData" in ds
    except ReaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # InvalidDicomError, EOFError, struct.error, ValueError, ...
        raise ReaderError(path, f"truncated or corrupt DICOM file ({exc})") from exc
    if not has_pixels:
        raise ReaderError(path, "no pixel data (PixelData is missing, or the file is truncated)")
    limits.check(path, n_frames * rows * cols, per_pixel)
    arr = _dicom_pixels(path, ds)
    if arr.size == 0:
        raise ReaderError(path, "the DICOM pixel data is empty")
    burned = _burned_in(path, ds)
    fields = scan_meta_fields(ds, keep_phi=keep_phi)
    is_color = arr.ndim == 4
    meta = ScanMeta(
        str(path), "dicom", arr.shape[0], is_color, burned_in_annotation=burned, **fields
    )
    return arr, meta


# -- public API ----------------------------------------------------------------------------


def read_scan(
    path: str | Path,
    *,
    max_bytes: int | None = None,
    max_pages: int | None = None,
    max_pixels: int | None = None,
    keep_phi: bool = False,
    detect_region: bool = False,
) -> tuple[np.ndarray, ScanMeta]:
    """Read a scan file into frames and metadata.

    The format comes from the content (DICOM 'DICM' marker, PNG/JPEG/BMP/TIFF magic bytes,
    MP4/MOV 'ftyp', AVI 'RIFF', Matroska EBML), so a file with an unusual suffix still reads;
    a supported suffix with other content fails.
    DICOM: YBR colour converted to RGB, palette colour expanded, MONOCHROME1 inverted,
    spacing from the ultrasound regions (cm -> mm) or PixelSpacing, the de-identified header
    in ``meta.header``. Signed or wider-than-16-bit integers are shifted to start at 0
    (uint16); floats are min-max scaled to uint16. Video (PyAV): every frame as RGB.
    A spacing or frame time that is not a positive finite number is left out (None) with a
    :class:`ReaderWarning` naming the file; a DICOM with burned-in annotation reads with a
    :class:`ReaderWarning` and ``meta.burned_in_annotation`` set. ``meta.region`` is the
    imaging region: the DICOM's largest 2-D tissue ultrasound region, else (any format, with
    ``detect_region``) the box :func:`propl.region.detect_region` finds, else None (the whole
    frame).

    Args:
        path: the file.
        max_bytes: refuse scans whose decoded pixels take more bytes (``F * H * W`` times
            the bytes per pixel, channels included); checked from the header before the
            pixels are decoded (for a video whose container does not declare its frame
            count: while decoding). None: ``$PROPL_MAX_SCAN_BYTES``, else
            :data:`MAX_SCAN_BYTES` (1 GiB).
        max_pages: refuse TIFFs of more pages, counted before decoding. None:
            ``$PROPL_MAX_TIFF_PAGES``, else :data:`MAX_TIFF_PAGES`.
        max_pixels: also refuse scans with more pixels ``F * H * W``; None: no such limit.
        keep_phi: DICOM: keep patient, staff and institution identity in ``meta.header``.
        detect_region: look for the imaging region in the pixels when the header gives
            none (:func:`propl.region.detect_region`). Off by default: the shipped model was
            trained on whole frames and scored lower on detected crops of its benchmark
            scans; a DICOM's own ultrasound region is always read.

    Returns:
        ``frames`` ``(F, H, W)`` uint8/uint16 or ``(F, H, W, 3)`` uint8 RGB (``F >= 1``),
        and its :class:`ScanMeta`.

    Raises:
        ReaderError: missing (:class:`ReaderFileNotFoundError`), empty, truncated, corrupt,
            unsupported or too large files; a directory; a DICOM without pixel data or
            without an installed decoder; a video without frames or without PyAV; not
            enough memory. Never another exception type. The message names the file.
    """
    path = Path(path)
    limits = size_limits(max_bytes, max_pages, max_pixels)
    fmt: str | None = None
    try:
        fmt = _detect_format(path)
        frames, meta = _read_format(path, fmt, limits, keep_phi)
    except ReaderError:
        raise
    except MemoryError as exc:
        what = _FORMAT_NAME.get(fmt or "", "file")
        raise ReaderError(
            path,
            f"not enough memory to decode this {what} (the size limit is "
            f"{_size(limits.max_bytes)}: lower it with {MAX_SCAN_BYTES_ENV} to refuse such "
            "files before decoding)",
        ) from exc
    except Exception as exc:  # a malformed value no check foresaw: still the file's fault
        what, reason = _FORMAT_NAME.get(fmt or "", "file"), f"{type(exc).__name__}: {exc}"
        raise ReaderError(path, f"corrupt or unsupported {what} ({reason})") from exc
    if frames.size == 0:
        raise ReaderError(path, "the image has no pixels")
    if meta.region is None and detect_region:
        from ..region import detect_region as detect

        meta = replace(meta, region=detect(frames))
    return frames, meta


def _read_format(
    path: Path, fmt: str, limits: SizeLimits, keep_phi: bool
) -> tuple[np.ndarray, ScanMeta]:
    if fmt == "dicom":
        return _read_dicom(path, limits, keep_phi)
    if fmt == "video":
        from .video import read_video  # imports this module: import it late

        return read_video(path, limits)
    if fmt == "tiff":
        return _read_tiff(path, limits)
    return _read_pil(path, fmt, limits)


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
    max_bytes: int | None = None,
    max_pages: int | None = None,
    max_pixels: int | None = None,
    keep_phi: bool = False,
    detect_region: bool = False,
) -> Iterator[ScanResult]:
    """Read every scan file of a folder (:func:`iter_scan_files`), one at a time.

    The folder is checked and listed when this is called; the files are read lazily.

    Args:
        folder: the folder to read.
        recursive: also read sub-folders.
        max_bytes: as :func:`read_scan`, per file.
        max_pages: as :func:`read_scan`, per file.
        max_pixels: as :func:`read_scan`, per file.
        keep_phi: as :func:`read_scan`.
        detect_region: as :func:`read_scan`.

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
    options = {"max_bytes": max_bytes, "max_pages": max_pages, "max_pixels": max_pixels}
    return _read_each(paths, options | {"keep_phi": keep_phi, "detect_region": detect_region})


def _read_each(paths: list[Path], options: dict[str, Any]) -> Iterator[ScanResult]:
    for path in paths:
        try:
            frames, meta = read_scan(path, **options)
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
