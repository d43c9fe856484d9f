"""The refiner's zoom-in: from the second click it refines in a window around the object."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from propl.inference import Predictor
from propl.interactive import (
    ZOOM_FROM_CLICK,
    ZOOM_MIN_SIDE,
    Click,
    Refiner,
    zoom_window,
)
from propl.region import Region

H, W = 200, 300
FRAME = Region(0, 0, H, W)


class Spy(Predictor):
    """Records the shape of every frame the encoder is given (before resizing)."""

    seen: list[tuple[int, ...]]

    def encode(self, x: torch.Tensor, task_id: int):  # type: ignore[no-untyped-def]
        self.seen.append(tuple(x.shape))
        return super().encode(x, task_id)


@pytest.fixture(scope="module")
def model(clicking_model: torch.nn.Module) -> torch.nn.Module:
    return clicking_model


def spy(model: torch.nn.Module) -> Spy:
    predictor = Spy(model, device="cpu", uncertainty="none")
    predictor.seen = []
    return predictor


def frame(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((H, W)) * 255).astype(np.uint8)


def small_object() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[90:110, 140:170] = 1  # 20 x 30
    return mask


def test_window_holds_the_object_and_the_clicks_with_a_margin() -> None:
    clicks = [Click(100, 150), Click(60, 160, False)]
    win = zoom_window(small_object(), clicks, None, FRAME)
    assert win is not None
    assert win.y0 <= 60 and win.y1 >= 111 and win.x0 <= 140 and win.x1 >= 170
    # at least the minimum share of each side, inside the frame, not the whole frame
    assert win.shape[0] >= ZOOM_MIN_SIDE * H and win.shape[1] >= ZOOM_MIN_SIDE * W
    assert win.fits((H, W)) and win.shape[0] * win.shape[1] < H * W
    # an object near the edge: the window is shifted inside the frame, not cut
    edge = zoom_window(np.zeros((H, W)), [Click(2, 3), Click(10, 12)], None, FRAME)
    assert edge is not None and (edge.y0, edge.x0) == (0, 0)
    assert edge.shape == (int(np.ceil(ZOOM_MIN_SIDE * H)), int(np.ceil(ZOOM_MIN_SIDE * W)))


def test_no_window_for_a_large_object_or_nothing_to_frame() -> None:
    big = np.zeros((H, W), np.uint8)
    big[20:180, 30:270] = 1
    assert zoom_window(big, [Click(100, 150)], None, FRAME) is None
    assert zoom_window(None, [], None, FRAME) is None


def test_window_stays_in_the_imaging_region_and_includes_the_box() -> None:
    region = Region(40, 60, 180, 280)
    mask = small_object()
    mask[:40] = 1  # brush strokes above the imaging region do not count
    win = zoom_window(mask, [Click(100, 150), Click(105, 160)], (80, 100, 120, 200), region)
    assert win is not None
    assert region.y0 <= win.y0 and win.y1 <= region.y1
    assert region.x0 <= win.x0 and win.x1 <= region.x1
    assert win.x0 <= 100 and win.x1 >= 200


def test_refiner_zooms_from_the_second_click_and_keeps_the_rest(model) -> None:
    predictor = spy(model)
    img = frame()
    refiner = Refiner(predictor, img, "t")
    assert predictor.seen == [(1, H, W)]
    start = small_object()
    # threshold 0: every pixel the head refines comes out foreground
    first = refiner.refine(start, [Click(100, 150)], threshold=0.0)[0]
    assert len(predictor.seen) == 1 and first.all()  # the first click: the whole frame
    assert ZOOM_FROM_CLICK == 2
    clicks = [Click(100, 150), Click(95, 160)]
    win = zoom_window(start, clicks, None, FRAME)
    assert win is not None
    mask, prob = refiner.refine(start, clicks, threshold=0.0)
    assert predictor.seen[1] == (1, *win.shape)  # the window, encoded once
    outside = np.ones((H, W), bool)
    outside[win.slices] = False
    assert mask[win.slices].all()
    assert np.array_equal(mask[outside], start[outside])  # untouched outside the window
    assert np.array_equal(prob[outside], start[outside].astype(np.float32))
    # inside: exactly what a refiner of the window alone makes
    alone = Refiner(Predictor(model, device="cpu"), img, "t", region=win, zoom=False)
    _, p_alone = alone.refine(start, clicks)
    _, p_zoom = refiner.refine(start, clicks)
    assert np.array_equal(p_zoom[win.slices], p_alone[win.slices])
    # a click inside the window reuses its encoding
    refiner.refine(start, [*clicks, Click(100, 165)])
    assert len(predictor.seen) == 2
    # a click beyond it frames a new window
    refiner.refine(start, [*clicks, Click(60, 200, False)])
    assert len(predictor.seen) == 3 and predictor.seen[2] != predictor.seen[1]
    # one whose window would cover most of the frame: the whole frame's encoding again
    whole = refiner.refine(start, [*clicks, Click(5, 5, False)], threshold=0.0)[0]
    assert len(predictor.seen) == 3 and whole.all()


def test_refiner_without_zoom_encodes_once(model) -> None:
    predictor = spy(model)
    refiner = Refiner(predictor, frame(), "t", zoom=False)
    clicks = [Click(100, 150), Click(95, 160), Click(105, 140)]
    for k in range(1, 4):
        refiner.refine(small_object(), clicks[:k])
    assert len(predictor.seen) == 1


def test_zoomed_result_is_zero_outside_the_imaging_region(model) -> None:
    region = Region(40, 60, 180, 280)
    refiner = Refiner(spy(model), frame(), "t", region=region)
    start = small_object()
    start[:30] = 1  # a brush stroke above the image
    mask, prob = refiner.refine(start, [Click(100, 150), Click(95, 160)], threshold=0.0)
    outside = np.ones((H, W), bool)
    outside[region.slices] = False
    assert not mask[outside].any() and not prob[outside].any()
