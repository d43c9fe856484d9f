"""The imaging region of an ultrasound frame: where the tissue is, without the scanner's text.

An ultrasound screen holds more than the image: a header with the maker's name and settings,
a greyscale bar, calipers' readouts, an ECG trace. The network segments only the imaging
region, a bounding box of the stored frame; results outside it are zero
(:meth:`propl.inference.Predictor.predict`).

The region comes from the DICOM header's ultrasound regions
(:func:`propl.data.dicom.ultrasound_region`) or, for files without one, from
:func:`detect_region`, a conservative detector that crops only around what is clearly not
tissue (black borders, text panels) and otherwise keeps the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

REGION_SOURCES = ("dicom", "detected", "user")
DETECT_MIN_CUT = 0.05
""":func:`detect_region` crops only when the box leaves out at least this part of the frame."""
_DETECT_SIZE = 256  # the detector works on frames shrunk to at most this many pixels a side
_DARK = 0.02  # at most ~5/255: the black around the image (tissue is speckled above it)
_MIN_IMAGE = 0.1  # the largest part is at least this much of the frame, else no crop
_MIN_PART = 0.01  # parts of at least this much of the frame are image; smaller ones text
_MAX_FRAMES = 16  # a cine's region is found from this many frames spread through it


@dataclass(frozen=True)
class Region:
    """A bounding box of the stored frame: rows ``y0:y1``, columns ``x0:x1`` (end exclusive).

    Attributes:
        y0: first row.
        x0: first column.
        y1: one past the last row.
        x1: one past the last column.
        source: ``"dicom"`` (the header's SequenceOfUltrasoundRegions), ``"detected"``
            (:func:`detect_region`) or ``"user"``.
    """

    y0: int
    x0: int
    y1: int
    x1: int
    source: str = "user"

    def __post_init__(self) -> None:
        if not (0 <= self.y0 < self.y1 and 0 <= self.x0 < self.x1):
            raise ValueError(f"not a region: rows {self.y0}:{self.y1}, cols {self.x0}:{self.x1}")
        if self.source not in REGION_SOURCES:
            raise ValueError(f"region source must be one of {REGION_SOURCES}: {self.source!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the box."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices: ``frame[region.slices]`` is the crop."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    def fits(self, shape: tuple[int, ...]) -> bool:
        """The box lies inside a frame of ``shape`` ``(H, W)``."""
        return self.y1 <= shape[0] and self.x1 <= shape[1]

    def covers(self, shape: tuple[int, ...]) -> bool:
        """The box is the whole frame of ``shape`` ``(H, W)``."""
        return (self.y0, self.x0, self.y1, self.x1) == (0, 0, shape[0], shape[1])

    def to_json(self) -> dict[str, Any]:
        """``{"rows": [y0, y1], "cols": [x0, x1], "source": ...}`` (the project store's form)."""
        return {"rows": [self.y0, self.y1], "cols": [self.x0, self.x1], "source": self.source}

    @classmethod
    def from_json(cls, doc: Any) -> Region | None:
        """The region :meth:`to_json` wrote; None for None (a project from before regions)."""
        if doc is None:
            return None
        (y0, y1), (x0, x1) = doc["rows"], doc["cols"]
        return cls(int(y0), int(x0), int(y1), int(x1), str(doc.get("source", "user")))


def crop_window(region: Region | None, shape: tuple[int, ...]) -> Region | None:
    """The region to crop frames of ``shape`` ``(H, W)`` to; None for the whole frame.

    Raises:
        ValueError: the region does not fit the frame (it belongs to another scan).
    """
    if region is None or region.covers(shape):
        return None
    if not region.fits(shape):
        raise ValueError(f"{region} does not fit frames of {shape[0]}x{shape[1]} pixels")
    return region


def paste(values: np.ndarray, region: Region | None, shape: tuple[int, int]) -> np.ndarray:
    """``(B, h, w)`` results on the region's crop placed in ``(B, H, W)`` zeros."""
    if region is None:
        return values
    out = np.zeros((values.shape[0], *shape), values.dtype)
    out[(slice(None), *region.slices)] = values
    return out


def detect_region(frames: np.ndarray, min_cut: float = DETECT_MIN_CUT) -> Region | None:
    """The box around the image of a screen capture (PNG, video, a DICOM without regions).

    The frames (up to 16 of a cine, their brightest value per pixel) are shrunk to at most 256
    pixels a side; pixels above near-black are opened (thin strokes of text and tick marks
    go) and closed (speckle in dark tissue joins up), and the largest connected part is the
    image. Its box, a margin added, is used only when the answer is clear: it leaves out at
    least ``min_cut`` of the frame, the part is at least a fifth of the frame, and no other
    part is a third of its size (two images side by side keep the whole frame).

    Args:
        frames: ``(F, H, W)`` or ``(F, H, W, 3)`` as read, or one ``(H, W)`` frame.
        min_cut: the least part of the frame the box must leave out.

    Returns:
        A ``"detected"`` region, or None for the whole frame.
    """
    from scipy import ndimage

    small, step = _brightest(frames)
    fg = small > _DARK * (float(small.max()) or 1.0)
    k = max(3, round(min(small.shape) / 40)) | 1  # odd, ~2.5 % of the side
    fg = ndimage.binary_opening(fg, np.ones((3, 3), bool), iterations=max(1, k // 3))
    fg = ndimage.binary_closing(fg, np.ones((k, k), bool), border_value=0)
    labels, n = ndimage.label(fg)
    sizes = np.bincount(labels.ravel())[1:]
    if n == 0 or sizes.max() < _MIN_IMAGE * fg.size:
        return None
    # dark tissue (fluid, shadows) can split the image into parts: keep every sizeable one
    image = np.isin(labels, 1 + np.flatnonzero(sizes >= _MIN_PART * fg.size))
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    h, w = _frame_shape(frames)
    margin = k * step  # what the closing and the shrinking may have cut at the edge
    y0, y1 = max(0, rows[0] * step - margin), min(h, (rows[-1] + 1) * step + margin)
    x0, x1 = max(0, cols[0] * step - margin), min(w, (cols[-1] + 1) * step + margin)
    if (y1 - y0) * (x1 - x0) > (1 - min_cut) * h * w:
        return None
    return Region(int(y0), int(x0), int(y1), int(x1), "detected")


def _brightest(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """The brightest value of each pixel over a few frames, as float, shrunk by an integer
    step (block maximum) to at most :data:`_DETECT_SIZE` a side; and the step."""
    a = np.asarray(frames)
    a = a[None] if a.ndim == 2 else a
    picks = np.unique(np.linspace(0, len(a) - 1, min(len(a), _MAX_FRAMES)).round().astype(int))
    top = a[picks].max(axis=0).astype(np.float32)
    if top.ndim == 3:
        top = top.max(axis=-1)  # colour overlays count as image
    step = max(1, -(-max(top.shape) // _DETECT_SIZE))
    h, w = (top.shape[0] // step) * step, (top.shape[1] // step) * step
    small = top[:h, :w].reshape(h // step, step, w // step, step).max(axis=(1, 3))
    return small, step


def _frame_shape(frames: np.ndarray) -> tuple[int, int]:
    a = np.asarray(frames)
    if a.ndim == 2:
        return (a.shape[0], a.shape[1])
    if a.ndim not in (3, 4):
        raise ValueError(f"expected frames (H, W), (F, H, W) or (F, H, W, 3), got {a.shape}")
    return (a.shape[1], a.shape[2])
