"""Clicks, undo and propagation on the open scan, headless; their provenance reaches the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from propl.annotation import AnnotationSession
from propl.annotation.interaction import ScanInteraction
from propl.inference import Predictor
from propl.interactive import Click, RefineUnavailableError
from propl.models import build_model
from propl.store import Project

TASK = "t"


def predictor(refine: bool = True) -> Predictor:
    torch.manual_seed(0)
    kw: dict[str, object] = {"refine": {"width": 8, "click_radius": 3.0}} if refine else {}
    model = build_model("propl-small", tasks=(TASK,), input_size=64, pretrained=False, **kw)
    return Predictor(model.eval(), device="cpu", uncertainty="none")


@pytest.fixture
def cine() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (5, 40, 48), dtype=np.uint8)


def test_click_undo_and_provenance(cine) -> None:
    act = ScanInteraction(predictor(), cine, TASK)
    start = np.zeros((40, 48), np.uint8)
    start[10:20, 10:20] = 1
    first = act.click(2, start, Click(15, 15, True))
    assert first.mask.shape == first.uncertainty.shape == (40, 48)
    assert 0 <= first.uncertainty.min() and first.uncertainty.max() <= 1
    second = act.click(2, first.mask, Click(30, 40, False), box=(5, 5, 35, 45))
    assert second.clicks == (Click(15, 15, True), Click(30, 40, False))
    assert second.box == (5, 5, 35, 45)
    np.testing.assert_array_equal(act.undo(2), first.mask)  # the mask before the last click
    assert act.clicks(2) == (Click(15, 15, True),)
    np.testing.assert_array_equal(act.undo(2), start)
    assert act.undo(2) is None and act.undo(0) is None
    with pytest.raises(ValueError, match="click or a box"):
        act.click(1, start)
    prov = act.provenance()
    assert prov["clicks"] == 2 and prov["boxes"] == 1 and prov["undone"] == 2
    out = act.propagate(np.repeat(start[None], 5, axis=0), 2, stop_below=0.0)
    assert sorted(out.reached) == [0, 1, 3, 4]
    assert act.provenance()["propagated_frames"] == 4


def test_old_model_says_clicks_need_a_newer_model(cine) -> None:
    act = ScanInteraction(predictor(refine=False), cine, TASK)
    with pytest.raises(RefineUnavailableError, match="newer model"):
        act.click(0, np.zeros((40, 48), np.uint8), Click(3, 3))


def test_the_clicks_are_stored_with_the_review(tmp_path: Path, cine) -> None:
    with Project.create(tmp_path / "p.zarr") as p:
        from propl.tasks import Task

        p.add_task(Task(TASK))
        sid = p.add_scan(cine, "cine")
    session = AnnotationSession(task=TASK)
    session.open_project(tmp_path / "p.zarr")
    view = session.open_scan(sid)
    act = ScanInteraction(predictor(), cine, TASK)
    refined = act.click(1, view.mask[1], Click(20, 20, True))
    mask = view.mask.copy()
    mask[1] = refined.mask
    mask[1, 0, 0] = 1  # certainly an edit
    review = session.store(session.review_save("draft", mask, provenance=act.provenance()))
    assert review.provenance["clicks"] == 1
    assert review.provenance["frames"] == {"1": [[20.0, 20.0, True]]}
    assert session.require_project().review(sid, TASK).provenance["clicks"] == 1
    session.close_project()
