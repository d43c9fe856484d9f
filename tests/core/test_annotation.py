"""The loop's rules in the core session, without Qt: what a draft, a confirmation, a refusal
and Next mean, the predictor cache under threads, promotion and re-prediction."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from propl.annotation import (
    AnnotationSession,
    next_after_save,
    predict_scan,
    step_in_queue,
)
from propl.store import Project
from propl.tasks import Task

TASK = "dark_blob"
SIZE = 64


def predicted_project(path: Path, shapes: list[tuple[int, ...]]) -> tuple[Project, list[str]]:
    """An open project with one predicted scan per shape (a square; confidence rising)."""
    project = Project.create(path, tasks=[Task("bright_blob"), Task(TASK)])
    ids = []
    for i, shape in enumerate(shapes):
        sid = project.add_scan(np.full(shape, 40 + i, np.uint8), f"scan{i}")
        pred = np.zeros(shape, np.uint8)
        pred[:, 5:15, 5:15] = 1
        conf = np.full(shape[0], 0.5 + i / 10)
        project.save_prediction(sid, TASK, pred, np.zeros(shape), conf, "v1")
        ids.append(sid)
    return project, ids


@pytest.fixture
def session(tmp_path):
    project, ids = predicted_project(tmp_path / "p.zarr", [(1, 32, 32), (12, 32, 32), (1, 32, 32)])
    s = AnnotationSession(project, TASK)
    s.ids = ids  # type: ignore[attr-defined]
    yield s
    s.close_project()


# --- drafts, confirmations, refusals ----------------------------------------------------------


def test_an_edit_is_a_draft_and_only_a_confirmation_labels(session):
    still = session.ids[0]
    view = session.open_scan(still)
    assert view.status == "unreviewed" and view.mask[0, 10, 10] == 1
    assert session.save_draft(view.mask) is None  # nothing changed: nothing to store
    mask = view.mask.copy()
    mask[0, 25, 25] = 1
    draft = session.save_draft(mask)
    assert draft.status == "draft" and not draft.is_labelled
    assert session.save_draft(mask) is None  # the store holds it already
    assert session.queue().ids.count(still) == 1  # a draft stays in the queue
    confirmed = session.confirm(mask)
    assert confirmed.status == "corrected" and confirmed.is_labelled
    assert still not in session.queue().ids
    # the same scan, unedited, on another open: accepted as the model drew it
    view = session.open_scan(session.ids[2])
    assert session.confirm(view.mask).status == "accepted"


def test_a_cine_confirms_the_frame_on_screen_and_the_edited_frames(session):
    cine = session.ids[1]
    view = session.open_scan(cine)
    assert view.worst_frame is not None  # a cine opens at its least confident frame
    mask = view.mask.copy()
    mask[8, 25, 25] = 1
    session.save_draft(mask)
    review = session.confirm(mask, shown_frame=3)
    assert review.frames[8] == "corrected" and review.frames[3] == "accepted"
    assert list(review.labelled_frames) == [3, 8] and review.frames.count("unreviewed") == 10
    assert len(session.confirm(mask, shown_frame=3, whole=True).labelled_frames) == 12


def test_refusals_store_no_mask_and_name_a_reason(session):
    saved = []
    session.review_saved.connect(saved.append)
    session.open_scan(session.ids[0])
    rejected = session.reject()
    assert rejected.status == "rejected" and rejected.reason == "rejected"
    assert session.project.review(session.ids[0], TASK).mask is None
    session.open_scan(session.ids[2])
    assert session.skip("  ask a colleague ").reason == "ask a colleague"
    assert [r.status for r in saved] == ["rejected", "skipped"]
    assert session.queue().ids == [session.ids[1]]
    assert (session.queue().done, session.queue().total) == (2, 3)


def test_a_save_is_bound_to_the_scan_it_was_made_for(session):
    """A view makes the save on its own thread and stores it in a worker: opening the next
    scan in between must not send the edit there."""
    first, _, third = session.ids
    view = session.open_scan(first)
    mask = view.mask.copy()
    mask[0, 20, 20] = 1
    save = session.review_save("draft", mask)
    session.open_scan(third)
    session.store(save)
    assert session.project.review(first, TASK).status == "draft"
    assert session.project.review(third, TASK) is None
    with pytest.raises(ValueError, match="unknown review status"):
        session.review_save("maybe", mask)
    session.show(None)
    with pytest.raises(RuntimeError, match="no scan"):
        session.confirm(mask)


def test_a_failing_listener_does_not_undo_a_save(session, caplog):
    session.review_saved.connect(lambda review: 1 / 0)
    heard = []
    session.review_saved.connect(heard.append)
    session.open_scan(session.ids[0])
    assert session.confirm().status == "accepted"  # no mask: what the store holds
    assert len(heard) == 1 and "review saved callback failed" in caplog.text


# --- the queue ----------------------------------------------------------------------------------


def test_the_queue_advances_least_confident_first(session):
    ids = session.queue().ids
    assert ids == session.ids  # confidence 0.5, 0.6, 0.7
    assert session.next_scan() == ids[0]  # nothing open: the first
    session.open_scan(ids[0])
    assert session.next_scan() == ids[1] and session.previous_scan() == ids[0]  # held at the end
    session.open_scan(ids[2])
    assert session.next_scan() == ids[2]
    # after a decision: the first other scan of the queue as it is now
    session.open_scan(ids[1])
    session.confirm(session.current.mask, whole=True)
    assert session.next_after_save() == ids[0]
    assert next_after_save([ids[1]], ids[1]) is None
    assert step_in_queue([], None, 1) is None
    assert session.queue(include_reviewed=True).ids == ids


def test_the_task_decides_what_is_read_and_saved(session):
    changes = []
    session.task_changed.connect(changes.append)
    session.set_task("bright_blob")
    session.set_task("bright_blob")  # no change: no call
    assert changes == ["bright_blob"]
    view = session.open_scan(session.ids[0])
    assert view.task == "bright_blob" and not view.mask.any()  # nothing predicted for it
    session.confirm(view.mask)
    assert session.project.review(session.ids[0], TASK) is None


# --- the predictor ------------------------------------------------------------------------------


def test_two_threads_asking_at_once_get_one_predictor(session, monkeypatch, tmp_path):
    from propl.inference import Predictor

    loads = []

    def slow_load(path, **kw):
        loads.append(threading.current_thread().name)
        time.sleep(0.3)  # both threads are inside before the first load ends
        return object()

    monkeypatch.setattr(Predictor, "from_checkpoint", staticmethod(slow_load))
    model = tmp_path / "model"
    model.mkdir()
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(session.predictor(model, "cpu")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and got[0] is got[1]
    assert session.predictor(model, "cpu") is got[0]  # reused
    assert session.predictor(model, "cpu", "none") is not got[0]  # another mode: loaded
    assert len(loads) == 2


# --- promotion and re-prediction with a tiny model ---------------------------------------------


def tiny_version(root: Path, record: dict) -> str:
    import torch

    from propl.checkpoint import save_checkpoint
    from propl.data.synthetic import SYNTHETIC_TASKS
    from propl.models import build_model
    from propl.store import versions as ver

    staged = ver.new_staging(root)
    torch.manual_seed(0)
    model = build_model("propl-small", tasks=SYNTHETIC_TASKS, input_size=SIZE, pretrained=True)
    save_checkpoint(model, staged)
    return ver.add_version(root, staged, {"parent": "shipped", "tasks": [], **record})


@pytest.fixture
def tiny_project(tmp_path):
    """v0001 (tiny, current); six scans: two corrected, one draft, three predicted by it."""
    from propl.data.synthetic import make_scan

    root = tmp_path / "tiny.zarr"
    rng = np.random.default_rng(0)
    project = Project.create(root, tasks=[Task("bright_blob"), Task(TASK)])
    project.set_current(tiny_version(root, {"outcome": "better"}), "test setup")
    for i in range(6):
        image, _, dark = (
            np.stack(f) for f in zip(*[make_scan(SIZE, rng) for _ in range(2)], strict=True)
        )
        sid = project.add_scan(image, f"scan{i}")
        zeros = np.zeros_like(dark)
        if i >= 2:
            conf = np.full(2, 0.5 + i / 100)
            project.save_prediction(sid, TASK, zeros, zeros.astype(np.float16), conf, "v0001")
        if i < 2:
            project.save_review(sid, TASK, "corrected", dark)
        elif i == 2:
            project.save_review(sid, TASK, "draft", dark)
    yield project
    project.close()


def test_promotion_of_a_better_version_then_re_prediction(tiny_project):
    root = tiny_project.root
    session = AnnotationSession(tiny_project, TASK, device="cpu", uncertainty="none")
    heard: list[str] = []
    session.model_changed.connect(lambda: heard.append("model"))
    session.predictions_changed.connect(lambda: heard.append("predictions"))
    worse = tiny_version(root, {"outcome": "worse", "baseline": "v0001"})
    assert not session.promote(worse) and heard == []
    better = tiny_version(root, {"outcome": "better", "baseline": "v0001"})
    result = {"version": better, "outcome": "better", "score": 80.0}
    result |= {"baseline_score": 70.0, "baseline": "v0001", "message": ""}
    round_ = session.settle_round(result)
    assert round_.promoted and round_.summary.startswith(f"promoted {better}: held-back Dice 80.0")
    assert "click tool" not in round_.summary  # this run's head was not kept
    assert tiny_project.current_version().name == better and heard == ["model"]
    assert session.model_path() == tiny_project.version(better).path

    steps = list(session.iter_repredict())
    assert steps == [(0, 3), (1, 3), (2, 3), (3, 3)] and heard[-1] == "predictions"
    scans = tiny_project.scan_ids()
    # the unreviewed scans are the new version's; the draft and the labels keep theirs
    assert {tiny_project.prediction(s, TASK).model_version for s in scans[3:]} == {better}
    assert tiny_project.prediction(scans[2], TASK).model_version == "v0001"
    assert tiny_project.review(scans[2], TASK).status == "draft"
    # a version judged against a model that is no longer current is not promoted
    stale = tiny_version(root, {"outcome": "better", "baseline": "v0001"})
    stale_result = result | {"version": stale}
    assert not session.settle_round(stale_result).promoted


def test_a_round_trained_in_process_is_settled_by_the_same_rule(tiny_project):
    from propl.train.project import RetrainConfig

    session = AnnotationSession(tiny_project, TASK, device="cpu", uncertainty="none")
    small = dict(frames_per_scan=1, cache_features=False, max_unlabelled=4)
    config = RetrainConfig(
        steps=2, batch_size=2, device="cpu", eval_every=2, tasks=(TASK,), **small
    )
    steps = session.iter_retrain(config)
    kinds = []
    while True:
        try:
            kinds.append(next(steps).kind)
        except StopIteration as done:
            round_ = done.value
            break
    assert kinds[0] == "prepare" and kinds[-1] == "version"
    assert round_.version == "v0002" and round_.outcome in ("better", "worse")
    current = tiny_project.current_version().name
    assert current == ("v0002" if round_.promoted else "v0001")


def test_segment_stores_predictions_with_the_session_predictor(tiny_project):
    session = AnnotationSession(tiny_project, TASK, device="cpu", uncertainty="none")
    first = tiny_project.scan_ids()[0]
    report = session.segment([first], "bright_blob")
    assert (report.task, report.n_scans, report.device) == ("bright_blob", 1, "cpu")
    assert tiny_project.prediction(first, "bright_blob").model_version == "v0001"
    pred = predict_scan(tiny_project, session.predictor(), first, TASK)
    assert pred.mask.shape == (2, SIZE, SIZE)


# --- layering ---------------------------------------------------------------------------------


def test_the_session_needs_no_gui_and_no_torch_to_import():
    code = (
        "import sys, propl.annotation\n"
        "bad = [m for m in ('qtpy', 'napari', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_inference_knows_no_store_and_versions_no_project():
    import ast

    import propl.inference
    import propl.store.versions

    def imported(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        return {
            node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level > 0
        }

    assert not {m for m in imported(propl.inference) if m.startswith("store")}
    assert "project" not in imported(propl.store.versions)
    assert not hasattr(propl.inference.Predictor, "predict_stored")


def test_the_round_says_when_the_click_tool_learnt_too():
    from propl.annotation.rules import round_summary

    result = {"version": "v0002", "outcome": "better", "score": 80.0, "baseline_score": 70.0}
    result |= {"baseline": "v0001", "message": ""}
    kept = result | {"refine": {"trained": True, "kept": True}}
    assert round_summary(kept, True).endswith("(the click tool learnt from the corrections too)")
    put_back = result | {"refine": {"trained": True, "kept": False}}
    assert "click tool" not in round_summary(put_back, True)
    assert "click tool" not in round_summary(result | {"refine": None}, True)
