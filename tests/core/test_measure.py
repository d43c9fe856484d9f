"""measure_mask on hand-made discs, ellipses and rectangles with known analytical values."""

import math
import re

import numpy as np
import pytest
from skimage.measure import regionprops

from propl.measure import ellipse_circumference, measure_mask


def ellipse_mask(
    shape=(128, 128),
    centre_mm=(64.0, 64.0),
    semi_axes_mm=(20.0, 20.0),
    angle_deg=0.0,
    spacing=(1.0, 1.0),
):
    """Pixels whose centre, in mm, lies inside an ellipse given in mm.

    ``semi_axes_mm`` are along (row, col) before rotating by ``angle_deg``.
    """
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    y = rows * spacing[0] - centre_mm[0]
    x = cols * spacing[1] - centre_mm[1]
    t = math.radians(angle_deg)
    u = y * math.cos(t) + x * math.sin(t)
    v = -y * math.sin(t) + x * math.cos(t)
    return ((u / semi_axes_mm[0]) ** 2 + (v / semi_axes_mm[1]) ** 2 <= 1).astype(np.uint8)


def test_disc_in_pixels():
    m = measure_mask(ellipse_mask(semi_axes_mm=(20, 20)), None)
    assert m["unit"] == "px"
    assert m["area"] == pytest.approx(math.pi * 400, rel=0.02)
    assert m["major_axis"] == pytest.approx(40, rel=0.02)
    assert m["minor_axis"] == pytest.approx(40, rel=0.02)
    assert m["circumference"] == pytest.approx(2 * math.pi * 20, rel=0.03)


def test_rotated_ellipse_in_pixels():
    m = measure_mask(ellipse_mask(semi_axes_mm=(30, 12), angle_deg=35), None)
    assert m["area"] == pytest.approx(math.pi * 30 * 12, rel=0.02)
    assert m["major_axis"] == pytest.approx(60, rel=0.02)
    assert m["minor_axis"] == pytest.approx(24, rel=0.03)
    assert m["circumference"] == pytest.approx(ellipse_circumference(60, 24), rel=0.03)


def test_rectangle_has_exact_pixel_moments():
    mask = np.zeros((64, 96), np.uint8)
    mask[10:30, 20:60] = 1  # 20 rows x 40 columns
    m = measure_mask(mask)
    assert m["area"] == 800
    # n pixel centres in a row have variance (n^2 - 1) / 12
    assert m["major_axis"] == pytest.approx(4 * math.sqrt((40**2 - 1) / 12))
    assert m["minor_axis"] == pytest.approx(4 * math.sqrt((20**2 - 1) / 12))


def test_matches_skimage_regionprops_on_an_irregular_blob():
    rng = np.random.default_rng(0)
    mask = ellipse_mask(semi_axes_mm=(25, 14), angle_deg=-20)
    mask[rng.random(mask.shape) < 0.1] = 0  # speckle holes keep it one 8-connected region
    props = regionprops(mask.astype(int))[0]
    m = measure_mask(mask)
    assert m["area"] == props.area
    assert m["major_axis"] == pytest.approx(props.axis_major_length, rel=1e-9)
    assert m["minor_axis"] == pytest.approx(props.axis_minor_length, rel=1e-9)


def test_anisotropic_spacing_of_a_pixel_disc():
    # a disc of 20 px radius on (0.5, 0.25) mm pixels is an ellipse of 10 mm x 5 mm semi-axes
    m = measure_mask(ellipse_mask(semi_axes_mm=(20, 20)), (0.5, 0.25))
    assert m["unit"] == "mm"
    assert m["area"] == pytest.approx(math.pi * 400 * 0.5 * 0.25, rel=0.02)
    assert m["major_axis"] == pytest.approx(20, rel=0.02)
    assert m["minor_axis"] == pytest.approx(10, rel=0.02)
    assert m["circumference"] == pytest.approx(ellipse_circumference(20, 10), rel=0.03)


def test_anisotropic_spacing_of_a_physical_circle():
    spacing = (0.5, 0.25)
    mask = ellipse_mask((96, 192), (24, 24), (10, 10), spacing=spacing)
    rows, cols = np.nonzero(mask)
    assert np.ptp(cols) > 1.8 * np.ptp(rows)  # stretched in pixels, round in mm
    m = measure_mask(mask, spacing)
    assert m["major_axis"] == pytest.approx(20, rel=0.02)
    assert m["minor_axis"] == pytest.approx(20, rel=0.02)
    assert m["circumference"] == pytest.approx(2 * math.pi * 10, rel=0.03)


def test_anisotropic_spacing_of_a_tilted_ellipse_scales_coordinates_not_lengths():
    spacing = (0.5, 0.25)
    mask = ellipse_mask((128, 256), (32, 32), (20, 8), angle_deg=40, spacing=spacing)
    m = measure_mask(mask, spacing)
    assert m["major_axis"] == pytest.approx(40, rel=0.02)
    assert m["minor_axis"] == pytest.approx(16, rel=0.03)
    assert m["area"] == pytest.approx(math.pi * 20 * 8, rel=0.02)
    # the naive answer (pixel axes times one spacing) would be far off
    px = measure_mask(mask)
    assert abs(px["major_axis"] * spacing[1] - 40) > 2
    props = regionprops(mask.astype(int), spacing=spacing)[0]
    assert m["major_axis"] == pytest.approx(props.axis_major_length, rel=1e-6)


def test_only_the_largest_component_is_measured():
    mask = ellipse_mask(semi_axes_mm=(20, 20))
    mask[2:8, 2:8] = 1  # a separate island
    alone = measure_mask(ellipse_mask(semi_axes_mm=(20, 20)))
    assert measure_mask(mask) == alone


def test_bool_input_and_single_pixel():
    mask = np.zeros((8, 8), bool)
    mask[3, 4] = True
    m = measure_mask(mask, (0.2, 0.2))
    assert m["area"] == pytest.approx(0.04)
    assert m["major_axis"] == m["minor_axis"] == m["circumference"] == 0


@pytest.mark.parametrize("spacing, unit", [(None, "px"), ((0.3, 0.3), "mm")])
def test_empty_mask(spacing, unit):
    m = measure_mask(np.zeros((16, 16), np.uint8), spacing)
    assert m == {
        "area": 0.0,
        "major_axis": None,
        "minor_axis": None,
        "circumference": None,
        "unit": unit,
    }


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.full((4, 4), 2, np.uint8), "not binary"),
        (np.full((4, 4), 255, np.uint8), "not binary"),
        (np.zeros((4, 4), np.float32), "dtype float32"),
        (np.zeros((2, 4, 4), np.uint8), "shape (2, 4, 4)"),
    ],
)
def test_bad_masks_are_refused(mask, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        measure_mask(mask)


@pytest.mark.parametrize("spacing", [(0.0, 0.1), (0.1,), (-1.0, 1.0), (float("nan"), 1.0)])
def test_bad_spacing_is_refused(spacing):
    with pytest.raises(ValueError, match="spacing_mm"):
        measure_mask(np.ones((4, 4), np.uint8), spacing)


def test_ramanujan_circumference():
    assert ellipse_circumference(2, 2) == pytest.approx(2 * math.pi)
    assert ellipse_circumference(2, 0) == pytest.approx(4, rel=1e-3)  # a flat ellipse: 2 x 2a
    assert ellipse_circumference(0, 0) == 0
