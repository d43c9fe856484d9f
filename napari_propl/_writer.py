"""napari writer: File > Save Selected Layers… writes a Labels layer as a mask file.

``.tif``/``.tiff`` (one stack), ``.nii``/``.nii.gz`` (with the layer's pixel spacing) or
``.png`` (one file per frame). napari's save dialog has already asked before replacing a
file, so existing files are replaced; the write itself is atomic (the core writers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from propl.export import write_mask_pngs, write_mask_tiff, write_nifti

SUFFIXES = (".tif", ".tiff", ".nii", ".nii.gz", ".png")


def _masks(data: Any, path: str) -> np.ndarray:
    masks = np.asarray(data)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{path}: a mask must be 2-D or a (frames, rows, cols) stack")
    if masks.size and (masks.min() < 0 or masks.max() > 255):
        raise ValueError(f"{path}: label values must be 0..255 to save as a mask")
    return masks.astype(np.uint8, copy=False)


def _spacing(meta: dict[str, Any]) -> tuple[float, float] | None:
    """(row, col) mm from the layer scale; None when it is the default 1 (unknown)."""
    scale = tuple(float(s) for s in (meta.get("scale") or ())[-2:])
    return scale if len(scale) == 2 and scale != (1.0, 1.0) else None  # type: ignore[return-value]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer to ``path``; returns the files written."""
    name = Path(path).name.lower()
    masks = _masks(data, path)
    if name.endswith((".nii", ".nii.gz")):
        return [str(write_nifti(masks, path, _spacing(meta), overwrite=True))]
    if name.endswith((".tif", ".tiff")):
        return [str(write_mask_tiff(masks, path, overwrite=True))]
    if name.endswith(".png"):
        target = Path(path)
        return [str(p) for p in write_mask_pngs(masks, target.parent, target.stem, overwrite=True)]
    raise ValueError(f"{path}: save masks as one of {', '.join(SUFFIXES)}")
