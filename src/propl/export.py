"""Writing predictions and masks to files (TIFF stacks, per-frame PNG)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .checkpoint import atomic_write_bytes
from .inference import Prediction

FORMATS = ("tiff", "png")


def _tiff_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, compression="zlib")
    return buf.getvalue()


def _png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


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
