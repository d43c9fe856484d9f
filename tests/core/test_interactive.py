"""The simulated annotator and the click metrics on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from propl.interactive import (
    MAX_CLICKS,
    Click,
    brush_pixels,
    iou,
    next_click,
    noc,
    simulate,
)
from propl.train.refine import training_click


def square(y0: int, x0: int, y1: int, x1: int, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_missed_region_gets_a_positive_click_at_its_centre() -> None:
    truth = square(10, 10, 21, 21)
    assert next_click(np.zeros_like(truth), truth) == Click(15.0, 15.0, True)


def test_larger_false_region_gets_a_negative_click() -> None:
    truth = square(10, 10, 15, 15)  # 25 px missed below
    pred = square(25, 5, 36, 16)  # 121 px false
    click = next_click(pred, truth)
    assert click == Click(30.0, 10.0, False)


def test_largest_region_wins_over_the_deepest_pixel_sum() -> None:
    truth = square(0, 0, 3, 30) | square(20, 20, 27, 27)  # thin strip 90 px, square 49 px
    click = next_click(np.zeros_like(truth), truth)
    assert click is not None and click.positive and click.y <= 2


def test_frame_edge_counts_as_boundary() -> None:
    truth = square(0, 0, 10, 10)
    click = next_click(np.zeros_like(truth), truth)
    assert click == Click(4.0, 4.0, True)


def test_exact_mask_needs_no_click() -> None:
    truth = square(5, 5, 9, 9)
    assert next_click(truth, truth) is None
    assert next_click(np.zeros_like(truth), np.zeros_like(truth)) is None


def test_training_click_is_jittered_inside_the_region() -> None:
    truth = square(10, 10, 31, 31).astype(bool)
    rng = np.random.default_rng(0)
    points = {training_click(np.zeros_like(truth), truth, rng) for _ in range(20)}
    assert len(points) > 1
    assert all(p is not None and truth[p[0], p[1]] and p[2] == 1.0 for p in points)
    assert training_click(np.zeros_like(truth), truth, None) == (20, 20, 1.0)


def test_iou_and_noc() -> None:
    a, b = square(0, 0, 10, 10), square(0, 0, 10, 5)
    assert iou(a, b) == 0.5 and iou(a * 0, b * 0) == 1.0
    assert noc([0.2, 0.8, 0.91, 0.95], 0.9) == 2
    assert noc([0.95], 0.9) == 0
    assert noc([0.1] * 30, 0.85) == MAX_CLICKS


def _greedy_brush(start: np.ndarray, truth: np.ndarray, threshold: float) -> int:
    """Brute force: repaint one pixel at a time, whichever raises the IoU most."""
    p, n = start.astype(bool).copy(), 0
    while iou(p, truth) < threshold:
        fn = np.argwhere(truth.astype(bool) & ~p)
        fp = np.argwhere(p & ~truth.astype(bool))
        cands = [(tuple(fn[0]), True)] if len(fn) else []
        cands += [(tuple(fp[0]), False)] if len(fp) else []
        best = max(cands, key=lambda c: _after(p, truth, *c))
        p[best[0]] = best[1]
        n += 1
    return n


def _after(p: np.ndarray, truth: np.ndarray, at: tuple[int, int], value: bool) -> float:
    q = p.copy()
    q[at] = value
    return iou(q, truth)


@pytest.mark.parametrize("threshold", [0.85, 0.9])
@pytest.mark.parametrize(
    "start",
    [
        square(8, 8, 14, 14, (20, 20)),
        square(2, 2, 19, 19, (20, 20)),
        square(0, 10, 9, 20, (20, 20)),
    ],
)
def test_brush_pixels_matches_brute_force(start: np.ndarray, threshold: float) -> None:
    truth = square(5, 5, 15, 15, (20, 20))
    assert brush_pixels(start, truth, threshold) == _greedy_brush(start, truth, threshold)


def test_brush_pixels_from_empty_and_good_masks() -> None:
    truth = square(0, 0, 10, 10)
    assert brush_pixels(None, truth, 0.9) == 90
    assert brush_pixels(truth, truth, 0.9) == 0


def test_simulate_feeds_clicks_and_previous_mask_back() -> None:
    truth = square(5, 5, 25, 25) | square(30, 30, 36, 36)
    seen: list[int] = []

    def paint(mask: np.ndarray, clicks: list[Click]) -> np.ndarray:
        """A perfect oracle per region: a click fixes the connected region it falls in."""
        from scipy import ndimage

        seen.append(len(clicks))
        c = clicks[-1]
        labels, _ = ndimage.label(truth != (mask > 0))
        out = mask.copy()
        out[labels == labels[int(c.y), int(c.x)]] = 1 if c.positive else 0
        return out

    ious = simulate(paint, truth)
    assert seen == [1, 2] and ious[0] == 0.0 and ious[2] == 1.0
    assert noc(ious, 0.9) == 1 and noc(ious, 0.95) == 2 and len(ious) == MAX_CLICKS + 1
    short = simulate(paint, truth, start=truth, stop_at=0.9, min_clicks=0)
    assert short == [1.0]
