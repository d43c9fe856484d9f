"""Propagation through a cine: chained start masks, stopping where the model is unsure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from propl import propagation
from propl.inference import Predictor
from propl.interactive import RefineUnavailableError
from propl.models import build_model
from propl.propagation import propagate

N, H, W = 9, 24, 30


class ShiftingRefiner:
    """Stand-in for the refinement head: moves the start mask one column right; frames listed
    in ``UNSURE`` get a blurry probability (low confidence)."""

    UNSURE: set[int] = set()
    calls: list[int] = []

    def __init__(self, predictor, frame, task, region=None) -> None:
        self.index = int(frame[0, 0])  # the test writes each frame's index in its corner

    def refine(self, mask, clicks):
        assert clicks == []
        ShiftingRefiner.calls.append(self.index)
        moved = np.roll(mask, 1, axis=1)
        prob = moved.astype(np.float32)
        if self.index in self.UNSURE:
            prob = np.full(mask.shape, 0.55, np.float32)
        return (prob > 0.5).astype(np.uint8), prob


@pytest.fixture
def cine() -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((N, H, W), np.uint8)
    frames[:, 0, 0] = np.arange(N)
    masks = np.zeros((N, H, W), np.uint8)
    masks[4, 8:14, 10:16] = 1  # the fixed frame
    return frames, masks


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(propagation, "Refiner", ShiftingRefiner)
    ShiftingRefiner.UNSURE, ShiftingRefiner.calls = set(), []
    return ShiftingRefiner


def test_each_frame_starts_from_its_neighbour_in_both_directions(cine, stub) -> None:
    frames, masks = cine
    out = propagate(None, frames, "t", 4, masks)
    assert out.reached == [5, 6, 7, 8, 3, 2, 1, 0]
    assert out.stopped_at == {"forward": None, "backward": None}
    for f in range(N):  # chained: |f - 4| shifts away from the fixed frame
        expected = np.roll(masks[4], abs(f - 4), axis=1)
        np.testing.assert_array_equal(out.masks[f], expected)
    assert np.isnan(out.confidence[4]) and np.all(out.confidence[[0, 8]] > 0.9)
    assert not masks[0].any()  # the input is not changed


def test_stops_at_the_first_unsure_frame_and_leaves_it(cine, stub) -> None:
    frames, masks = cine
    stub.UNSURE = {6, 1}
    before = masks.copy()
    before[6, 0, 0] = 1  # whatever the annotator had there stays
    out = propagate(None, frames, "t", 4, before)
    assert out.reached == [5, 3, 2]
    assert out.stopped_at == {"forward": 6, "backward": 1}
    np.testing.assert_array_equal(out.masks[6], before[6])
    np.testing.assert_array_equal(out.masks[7], before[7])  # never reached past the stop


def test_one_direction_cancel_and_progress(cine, stub) -> None:
    frames, masks = cine
    out = propagate(None, frames, "t", 4, masks, direction="backward")
    assert out.reached == [3, 2, 1, 0] and "forward" not in out.stopped_at
    seen: list[tuple[int, int]] = []
    out = propagate(
        None,
        frames,
        "t",
        4,
        masks,
        should_stop=lambda: len(seen) >= 2,
        progress=lambda *a: seen.append(a),
    )
    assert out.reached == [5, 6] and seen == [(1, 8), (2, 8)]


def test_bad_requests_are_refused(cine, stub) -> None:
    frames, masks = cine
    with pytest.raises(ValueError, match="direction"):
        propagate(None, frames, "t", 4, masks, direction="sideways")
    with pytest.raises(ValueError, match="outside"):
        propagate(None, frames, "t", 9, masks)
    with pytest.raises(ValueError, match="do not fit"):
        propagate(None, frames, "t", 4, masks[:, :10])


def test_a_model_without_the_head_says_clicks_need_a_newer_model(cine) -> None:
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=("t",), input_size=64, pretrained=False).eval()
    frames, masks = cine
    with pytest.raises(RefineUnavailableError, match="newer model"):
        propagate(Predictor(model, device="cpu", uncertainty="none"), frames, "t", 4, masks)


def test_with_a_real_head_every_frame_gets_a_mask_of_its_shape(cine) -> None:
    torch.manual_seed(0)
    refine = {"width": 8, "click_radius": 3.0}
    model = build_model(
        "propl-small", tasks=("t",), input_size=64, pretrained=False, refine=refine
    ).eval()
    frames, masks = cine
    out = propagate(
        Predictor(model, device="cpu", uncertainty="none"), frames, "t", 4, masks, stop_below=0.0
    )
    assert sorted(out.reached) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert out.masks.shape == (N, H, W) and out.masks.dtype == np.uint8


def test_colour_cines_propagate_frame_by_frame() -> None:
    """An RGB cine (F, H, W, 3): each frame is one colour frame, not three grey ones."""
    torch.manual_seed(0)
    refine = {"width": 8, "click_radius": 3.0}
    model = build_model(
        "propl-small", tasks=("t",), input_size=64, pretrained=False, refine=refine
    ).eval()
    frames = np.random.default_rng(0).integers(0, 255, (3, 20, 26, 3), dtype=np.uint8)
    masks = np.zeros((3, 20, 26), np.uint8)
    predictor = Predictor(model, device="cpu", uncertainty="none")
    out = propagate(predictor, frames, "t", 1, masks, stop_below=0.0)
    assert sorted(out.reached) == [0, 2] and out.masks.shape == (3, 20, 26)
