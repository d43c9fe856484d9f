"""Measurements of one binary mask frame: area, fitted-ellipse axes and circumference.

The axes are those of the ellipse with the same second moments as the region (as
``skimage.measure.regionprops`` defines ``major_axis_length`` / ``minor_axis_length``), and the
circumference is that ellipse's perimeter by Ramanujan's second approximation, the usual way
ultrasound biometry (e.g. head or abdominal circumference) reports a fitted ellipse.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MEASUREMENT_FIELDS = ("area", "major_axis", "minor_axis", "circumference", "unit")


def _check_binary(mask2d: np.ndarray) -> np.ndarray:
    """``mask2d`` as a bool ``(H, W)`` array, or ValueError saying what is wrong with it."""
    mask2d = np.asarray(mask2d)
    if mask2d.ndim != 2:
        raise ValueError(f"expected one (H, W) mask frame, got shape {mask2d.shape}")
    if mask2d.dtype == np.bool_:
        return mask2d
    if not np.issubdtype(mask2d.dtype, np.integer):
        raise ValueError(f"expected a bool or integer 0/1 mask, got dtype {mask2d.dtype}")
    values = np.unique(mask2d)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(str(v) for v in values[:8])
        raise ValueError(
            f"mask is not binary: values {{{shown}}}; pass (labels == k) for one label"
        )
    return mask2d.astype(bool)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component (ties: the one found first in raster order)."""
    from skimage.measure import label

    labels, n = label(mask, connectivity=2, return_num=True)
    if n <= 1:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return np.asarray(labels == int(np.argmax(counts)))


def _ellipse_axes(coords_mm: np.ndarray) -> tuple[float, float]:
    """Full major and minor axis lengths of the ellipse with the points' second moments."""
    centred = coords_mm - coords_mm.mean(axis=0)
    cov = centred.T @ centred / len(coords_mm)
    eig_small, eig_large = np.linalg.eigvalsh(cov)
    # 4 * sqrt(eigenvalue): a solid ellipse of semi-axis a has variance a^2 / 4 along it
    return 4.0 * math.sqrt(max(float(eig_large), 0.0)), 4.0 * math.sqrt(max(float(eig_small), 0.0))


def ellipse_circumference(major_axis: float, minor_axis: float) -> float:
    """Perimeter of an ellipse from its full axis lengths (Ramanujan's second approximation).

    ``pi (a + b) (1 + 3h / (10 + sqrt(4 - 3h)))`` with semi-axes ``a, b`` and
    ``h = ((a - b) / (a + b))^2``; exact for a circle, within 0.04 % for any ellipse.
    """
    a, b = major_axis / 2.0, minor_axis / 2.0
    if a + b == 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


def measure_mask(
    mask2d: np.ndarray, spacing_mm: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Area, fitted-ellipse axes and circumference of one binary frame.

    Only the largest connected component (8-connectivity) is measured, so stray islands of a
    prediction do not stretch the ellipse; ``area`` is that component's area too. The axes are
    those of the ellipse with the same second moments as the component's pixel centres (the
    definition of ``skimage.measure.regionprops``). With ``spacing_mm`` the pixel coordinates
    are scaled to millimetres *before* the moments are taken, so anisotropic pixels give the
    right physical ellipse (a tilted region is not just rescaled along its own axes).

    Args:
        mask2d: ``(H, W)`` bool or integer array with values in {0, 1}.
        spacing_mm: ``(row, col)`` millimetres per pixel, e.g. ``ScanMeta.spacing_mm``;
            None measures in pixels.

    Returns:
        ``{"area", "major_axis", "minor_axis", "circumference", "unit"}``: ``unit`` is
        ``"mm"`` with a spacing, else ``"px"``; lengths are in ``unit`` and the area in
        ``unit`` squared (mm² or pixels). An empty mask gives area 0 and None for the rest.

    Raises:
        ValueError: not a 2-D array, not bool/integer, values other than 0 and 1, or a
            spacing that is not two positive numbers.
    """
    mask = _check_binary(mask2d)
    if spacing_mm is None:
        scale, unit = np.ones(2), "px"
    else:
        scale, unit = np.asarray(spacing_mm, dtype=np.float64), "mm"
        if scale.shape != (2,) or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"spacing_mm must be two positive (row, col) values: {spacing_mm}")
    result: dict[str, Any] = dict.fromkeys(MEASUREMENT_FIELDS)
    result.update(area=0.0, unit=unit)
    if not mask.any():
        return result
    component = _largest_component(mask)
    coords_mm = np.argwhere(component).astype(np.float64) * scale
    major, minor = _ellipse_axes(coords_mm)
    result.update(
        area=float(len(coords_mm) * scale[0] * scale[1]),
        major_axis=major,
        minor_axis=minor,
        circumference=ellipse_circumference(major, minor),
    )
    return result
