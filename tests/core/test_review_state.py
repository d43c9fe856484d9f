"""Only what the annotator confirmed is a label: drafts, per-frame states of a cine, undo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from propl.store import Project
from propl.store.review_state import describe, frame_states, scan_status
from propl.train.project import RetrainConfig, collect

TASK = "left_heart"


def predicted_cine(p: Project, n: int = 12, seed: int = 0) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sid = p.add_scan(rng.integers(1, 255, (n, 24, 24), dtype=np.uint8), f"cine{seed}")
    mask = np.zeros((n, 24, 24), np.uint8)
    mask[:, 6:16, 6:16] = 1
    p.save_prediction(sid, TASK, mask, np.zeros(mask.shape), np.full(n, 0.9), "v1")
    return sid, mask


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "p.zarr") as p:
        yield p


def test_a_stroke_is_a_draft_never_a_label(project: Project) -> None:
    sid, pred = predicted_cine(project, n=1)
    stroke = pred.copy()
    stroke[0, 0:3, 0:3] = 1
    review = project.save_review(sid, TASK, "draft", stroke)
    assert review.status == "draft" and review.frames == ("draft",)
    assert not review.is_labelled
    assert project.review(sid, TASK).mask[0, 0, 0] == 1  # the edit is kept...
    queue = project.queue(TASK)  # ...the scan stays in the queue, shown as a draft
    assert [(q.scan_id, q.status) for q in queue] == [(sid, "draft")]
    assert project.progress(TASK) == (0, 1)


def test_one_stroke_on_frame_86_labels_frame_86_only(project: Project) -> None:
    sid, pred = predicted_cine(project, n=120)
    edited = pred.copy()
    edited[86, 0:4, 0:4] = 1
    draft = project.save_review(sid, TASK, "draft", edited)
    assert draft.frames.count("draft") == 1 and draft.frames[86] == "draft"
    assert len(draft.labelled_frames) == 0
    confirmed = project.save_review(sid, TASK, "corrected", edited, frames=[86])
    assert confirmed.status == "corrected"
    assert list(confirmed.labelled_frames) == [86]
    assert confirmed.frames.count("unreviewed") == 119
    assert describe(confirmed.frames) == "corrected (1 of 120 frames labelled)"


def test_accepting_a_cine_frame_by_frame_and_whole(project: Project) -> None:
    sid, pred = predicted_cine(project, n=6)
    r = project.save_review(sid, TASK, "accepted", pred, frames=[2])
    assert r.status == "accepted" and r.frames[2] == "accepted" and r.frames.count("accepted") == 1
    edited = pred.copy()
    edited[4, 0, 0] = 1
    r = project.save_review(sid, TASK, "accepted", edited, frames=[4])  # edited: corrected
    assert r.frames[2] == "accepted" and r.frames[4] == "corrected" and r.status == "corrected"
    r = project.save_review(sid, TASK, "accepted", edited)  # the whole cine
    assert r.frames == ("accepted",) * 4 + ("corrected", "accepted")


def test_editing_a_confirmed_frame_makes_it_a_draft_again(project: Project) -> None:
    sid, pred = predicted_cine(project, n=3)
    project.save_review(sid, TASK, "accepted")
    later = pred.copy()
    later[1, 0, 0] = 1
    r = project.save_review(sid, TASK, "draft", later)
    assert r.frames == ("accepted", "draft", "accepted")


def test_undo_back_to_the_prediction_is_stored_and_unlabels(project: Project) -> None:
    sid, pred = predicted_cine(project, n=1)
    stroke = pred.copy()
    stroke[0, 20:24, 20:24] = 1
    project.save_review(sid, TASK, "draft", stroke)
    undone = project.save_review(sid, TASK, "draft", pred)  # what Ctrl+Z leaves
    stored = project.review(sid, TASK)
    assert np.array_equal(stored.mask, pred) and undone.frames == ("unreviewed",)
    assert undone.edited_pixels == 0


def test_rejected_then_drafted(project: Project) -> None:
    sid, pred = predicted_cine(project, n=2)
    assert project.save_review(sid, TASK, "rejected", reason="no heart").status == "rejected"
    r = project.save_review(sid, TASK, "draft", pred)
    assert r.status == "draft" and r.frames == ("unreviewed", "unreviewed")


def test_training_uses_only_confirmed_frames(project: Project) -> None:
    a, pred = predicted_cine(project, n=10, seed=1)
    b, _ = predicted_cine(project, n=10, seed=2)
    c, _ = predicted_cine(project, n=10, seed=3)
    edited = pred.copy()
    edited[7, :4, :4] = 1
    project.save_review(a, TASK, "corrected", edited, frames=[7])
    project.save_review(b, TASK, "accepted", frames=[3, 5])
    project.save_review(c, TASK, "draft", edited)  # never confirmed: unlabelled
    data = collect(project, [TASK], [TASK], 24, RetrainConfig(hold_back=0.3, frames_per_scan=8))
    labelled = set(data.labelled.ids + data.held_back.ids)
    assert labelled == {f"{a}:7", f"{b}:3", f"{b}:5"}
    assert any(i.startswith(c) for i in data.unlabelled.ids)


def test_rules_on_their_own() -> None:
    states = frame_states("corrected", np.ones((2, 4, 4)), np.zeros((2, 4, 4)), None, None)
    assert states == ["corrected", "corrected"] and scan_status(states) == "corrected"
    assert scan_status(["skipped", "skipped"]) == "skipped"
    assert scan_status(["unreviewed", "draft"]) == "draft"


def test_reviews_written_before_frame_states_hold_for_every_frame(project: Project) -> None:
    import json

    sid, pred = predicted_cine(project, n=4)
    r = project.save_review(sid, TASK, "corrected", 1 - pred)
    meta = project.root / "scans" / sid / "labels" / TASK / r.revision / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["frames"], doc["attributes"]["checksums"]  # as version 1 wrote it
    meta.write_text(json.dumps(doc))
    old = project.review(sid, TASK)
    assert old.frames == ("corrected",) * 4 and list(old.labelled_frames) == [0, 1, 2, 3]


def test_frames_outside_the_scan_are_refused(project: Project) -> None:
    from propl.store import StoreError

    sid, _ = predicted_cine(project, n=3)
    with pytest.raises(StoreError, match="outside"):
        project.save_review(sid, TASK, "accepted", frames=[3])


def test_export_holds_the_confirmed_frames_only(project: Project, tmp_path: Path) -> None:
    import csv

    import tifffile

    from propl.project_export import export_project

    sid, pred = predicted_cine(project, n=4)
    edited = pred.copy()
    edited[2, 0:3, 0:3] = 1
    project.save_review(sid, TASK, "draft", edited)  # a stray stroke on frame 2...
    project.save_review(sid, TASK, "accepted", edited, frames=[1])  # ...frame 1 confirmed
    report = export_project(project, TASK, tmp_path / "out", formats=["tiff"])
    mask = tifffile.imread(report.written[0])
    assert mask[1].any() and not mask[0].any() and not mask[2].any()
    rows = list(csv.DictReader(report.csv.open()))
    assert [r["status"] for r in rows] == ["unreviewed", "accepted", "draft", "unreviewed"]
    assert rows[1]["area"] and not rows[2]["area"]
