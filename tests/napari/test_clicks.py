"""Click to fix and Propagate in the Review widget: the mask updates in place, Ctrl+Z takes a
click back, propagated frames are drafts, and the clicks are stored with the review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

import torch  # noqa: E402

from propl import propagation  # noqa: E402
from propl.annotation import interaction  # noqa: E402
from propl.checkpoint import save_checkpoint  # noqa: E402
from propl.models import build_model  # noqa: E402
from propl.store import Project  # noqa: E402
from propl.tasks import Task  # noqa: E402

PLUGIN = "napari-propl"
TASK = "t"
SHAPE = (6, 40, 48)


class DiskRefiner:
    """Stand-in for the refinement head: a disk of radius 4 around each click, added or
    removed; a frame index in the image's corner lets propagation tell frames apart."""

    def __init__(self, predictor, frame, task, region=None) -> None:
        self.shape = frame.shape[:2]

    def refine(self, mask, clicks, box=None):
        out = np.array(mask, np.uint8)
        yy, xx = np.mgrid[: self.shape[0], : self.shape[1]]
        for c in clicks:
            out[(yy - c.y) ** 2 + (xx - c.x) ** 2 <= 16] = 1 if c.positive else 0
        if not clicks:  # propagation: carry the mask one pixel down
            out = np.roll(out, 1, axis=0)
        return out, out.astype(np.float32)


@pytest.fixture
def project_path(tmp_path: Path) -> tuple[Path, str]:
    torch.manual_seed(0)
    model = build_model(
        "propl-small",
        tasks=(TASK,),
        input_size=64,
        pretrained=False,
        refine={"width": 8, "click_radius": 3.0},
    )
    save_checkpoint(model, tmp_path / "model")
    path = tmp_path / "p.zarr"
    with Project.create(path, tasks=[Task(TASK)]) as p:
        sid = p.add_scan(np.full(SHAPE, 60, np.uint8), "cine")
        pred = np.zeros(SHAPE, np.uint8)
        pred[:, 5:15, 5:15] = 1
        p.save_prediction(sid, TASK, pred, np.zeros(SHAPE), np.full(SHAPE[0], 0.7), "v0")
        p.import_model(tmp_path / "model")
    return path, sid


def open_review(make_napari_viewer, qtbot, path: Path, sid: str):
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(path)
    review.task_combo.setCurrentText(TASK)
    qtbot.waitUntil(lambda: review.queue_list.count() >= 1, timeout=30_000)
    review.load(sid)
    qtbot.waitUntil(lambda: review.scan_id == sid, timeout=30_000)
    return viewer, review


def test_click_box_undo_and_provenance(make_napari_viewer, qtbot, project_path, monkeypatch):
    monkeypatch.setattr(interaction, "Refiner", DiskRefiner)
    path, sid = project_path
    viewer, review = open_review(make_napari_viewer, qtbot, path, sid)
    review.buttons["click"].click()  # the tool on: the clicks layer is active
    assert viewer.layers.selection.active.metadata.get("propl_clicks")
    labels = review.labels_layer
    before = np.array(labels.data[2])
    review.clicks.submit(2, y=30, x=36, positive=True)
    review.clicks.wait()
    qtbot.waitUntil(lambda: labels.data[2][30, 36] == 1, timeout=10_000)  # updated in place
    assert len(review.clicks.layer.data) == 1
    review.clicks.submit(2, y=10, x=10, positive=False)  # a negative click
    review.clicks.wait()
    qtbot.waitUntil(lambda: labels.data[2][10, 10] == 0, timeout=10_000)
    viewer.dims.set_current_step(0, 2)
    review.clicks.undo()  # Ctrl+Z on the clicks layer: the last click only
    review.clicks.wait()
    qtbot.waitUntil(lambda: labels.data[2][10, 10] == 1, timeout=10_000)
    assert labels.data[2][10, 10] == 1 and labels.data[2][30, 36] == 1
    assert len(review.clicks.layer.data) == 1
    review.save_draft()
    review.wait_saved()
    draft = review.core.require_project().review(sid, TASK)
    assert draft.status == "draft" and draft.mask[2][30, 36] == 1
    assert draft.provenance["clicks"] == 2 and draft.provenance["undone"] == 1
    assert draft.provenance["frames"] == {"2": [[30.0, 36.0, True]]}
    assert not np.array_equal(before, draft.mask[2])
    review.buttons["click"].click()  # off again: the brush on the mask layer
    assert viewer.layers.selection.active.name == labels.name
    viewer.close()


def test_propagate_fills_the_cine_with_drafts(make_napari_viewer, qtbot, project_path, monkeypatch):
    monkeypatch.setattr(propagation, "Refiner", DiskRefiner)
    path, sid = project_path
    viewer, review = open_review(make_napari_viewer, qtbot, path, sid)
    viewer.dims.set_current_step(0, 3)
    worker = review.clicks.propagate()
    assert worker is not None
    qtbot.waitUntil(lambda: "propagated" in review.status_label.text(), timeout=30_000)
    labels = review.labels_layer
    assert labels.data[4][15, 10] == 1 and labels.data[4][5, 10] == 0  # one pixel down
    review.save_draft()
    review.wait_saved()
    draft = review.core.require_project().review(sid, TASK)
    assert draft.status == "draft" and not draft.is_labelled  # drafts until confirmed
    assert draft.provenance["propagated_frames"] == 5
    viewer.close()


def test_a_real_head_refines_in_a_worker(make_napari_viewer, qtbot, project_path) -> None:
    path, sid = project_path
    viewer, review = open_review(make_napari_viewer, qtbot, path, sid)
    review.clicks.submit(0, y=20, x=20, positive=True)
    review.clicks.wait()
    qtbot.waitUntil(lambda: len(review.clicks.layer.data if review.clicks.layer else []) <= 1)
    assert review.labels_layer.data.shape == SHAPE
    viewer.close()


def test_clicks_on_a_second_scan_of_another_size(
    make_napari_viewer, qtbot, project_path, monkeypatch
):
    """The second scan's uncertainty layers arrive a turn later, and the first scan's clicks
    must go: clicking at once neither fails nor shows the old clicks."""
    monkeypatch.setattr(interaction, "Refiner", DiskRefiner)
    path, first = project_path
    with Project.open(path) as p:
        second = p.add_scan(np.full((1, 30, 70), 90, np.uint8), "still")
        p.save_prediction(second, TASK, np.zeros((1, 30, 70)), np.zeros((1, 30, 70)), [0.2], "v0")
    viewer, review = open_review(make_napari_viewer, qtbot, path, first)
    errors: list[str] = []
    review.clicks.failed.connect(errors.append)
    review.buttons["click"].click()
    for _ in range(2):
        review.clicks.submit(0, y=20, x=20)
    review.clicks.wait()
    qtbot.waitUntil(lambda: review.labels_layer.data[0][20, 20] == 1, timeout=10_000)
    review.load(second)
    qtbot.waitUntil(lambda: review.scan_id == second, timeout=30_000)
    review.buttons["click"].click()
    review.clicks.submit(0, y=15, x=60)
    review.clicks.wait()
    qtbot.waitUntil(lambda: review.labels_layer.data[0][15, 60] == 1, timeout=10_000)
    layer = next(lyr for lyr in viewer.layers if lyr.metadata.get("propl_clicks"))
    assert len(layer.data) == 1 and not errors
    viewer.close()
