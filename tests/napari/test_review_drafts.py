"""What the annotator did in the Review widget is exactly what is stored, and only what they
confirmed is a label: undo reaches the store, Next keeps a draft, a cine is labelled per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from propl.store import Project  # noqa: E402

PLUGIN = "napari-propl"
TASK = "left_heart"


def open_for_review(make_napari_viewer, qtbot, path: Path, shapes: list[tuple[int, ...]]):
    """A viewer, a new project at ``path`` with one predicted scan per shape, the first shown."""
    with Project.create(path) as p:
        ids = []
        for i, shape in enumerate(shapes):
            sid = p.add_scan(np.full(shape, 40 + i, np.uint8), f"scan{i}")
            pred = np.zeros(shape, np.uint8)
            pred[:, 5:15, 5:15] = 1
            conf = np.full(shape[0], 0.5 + i / 10)
            p.save_prediction(sid, TASK, pred, np.zeros(shape), conf, "v1")
            ids.append(sid)
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(path)
    review.task_combo.setCurrentText(TASK)
    qtbot.waitUntil(lambda: review.queue_list.count() == len(shapes), timeout=30_000)
    review.load(ids[0])
    qtbot.waitUntil(lambda: review.scan_id == ids[0], timeout=30_000)
    return viewer, review, ids


def stored(review, scan_id: str):
    review.wait_saved()
    return review.session.project.review(scan_id, TASK)


def test_undo_after_the_autosave_reaches_the_store(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer, review, ids = open_for_review(make_napari_viewer, qtbot, tmp_path / "p", [(1, 32, 32)])
    labels = review.labels_layer
    before = np.array(labels.data)
    labels.paint((0, 25, 25), 1)  # a stroke far from the predicted square
    qtbot.waitUntil(lambda: review.session.project.review(ids[0], TASK) is not None, timeout=10_000)
    assert stored(review, ids[0]).mask[0, 25, 25] == 1
    labels.undo()  # napari's Ctrl+Z: no paint event, only a refresh
    assert np.array_equal(np.asarray(labels.data), before)
    qtbot.waitUntil(
        lambda: stored(review, ids[0]).mask[0, 25, 25] == 0, timeout=10_000
    )  # the autosave stored the undo
    labels.redo()
    review.step(1)  # Next right away, before the autosave: stored all the same
    review.wait_saved()
    after = stored(review, ids[0])
    assert after.mask[0, 25, 25] == 1 and after.status == "draft"
    viewer.close()


def test_next_after_editing_keeps_a_draft_and_only_confirmation_labels(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    viewer, review, ids = open_for_review(
        make_napari_viewer, qtbot, tmp_path / "p", [(1, 32, 32), (1, 32, 32)]
    )
    review.labels_layer.paint((0, 28, 28), 1)  # a stray stroke
    review.step(1)
    qtbot.waitUntil(lambda: review.scan_id == ids[1], timeout=30_000)
    draft = stored(review, ids[0])
    assert draft.status == "draft" and not draft.is_labelled

    def queue_texts() -> list[str]:
        return [review.queue_list.item(i).text() for i in range(review.queue_list.count())]

    # the queue shows drafts, still to be decided (re-read after the save is stored)
    qtbot.waitUntil(lambda: any("draft" in t for t in queue_texts()), timeout=30_000)
    assert len(queue_texts()) == 2
    review.accept()  # unedited: accepted, a label
    assert stored(review, ids[1]).status == "accepted"
    with Project.open(tmp_path / "p", read_only=True) as p:
        assert p.progress(TASK) == (1, 2)
    viewer.close()


def test_a_cine_is_labelled_frame_by_frame(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer, review, ids = open_for_review(make_napari_viewer, qtbot, tmp_path / "p", [(12, 32, 32)])
    review.labels_layer.paint((8, 25, 25), 1)  # one stroke on frame 8
    viewer.dims.set_current_step(0, 3)  # looking at frame 3
    review.confirm(advance=False)  # Save correction
    saved = stored(review, ids[0])
    assert saved.frames[8] == "corrected" and saved.frames[3] == "accepted"
    assert list(saved.labelled_frames) == [3, 8]
    assert saved.frames.count("unreviewed") == 10
    review.confirm(advance=False, whole=True)  # Accept all frames
    assert len(stored(review, ids[0]).labelled_frames) == 12
    viewer.close()
