"""The Retrain widget in a real viewer: the real subprocess, plot, promotion, re-prediction,
the review queue re-ordering, cancel, automatic retraining, rollback and a new task."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from propl.checkpoint import save_checkpoint  # noqa: E402
from propl.data.synthetic import SYNTHETIC_TASKS, make_scan  # noqa: E402
from propl.models import build_model  # noqa: E402
from propl.store import Project  # noqa: E402
from propl.store import versions as ver  # noqa: E402
from propl.tasks import Task  # noqa: E402

PLUGIN = "napari-propl"
TASK = "dark_blob"
FAST = ["--device", "cpu", "--lr", "1e-2", "--batch-size", "4"]
# Waits on training and re-prediction are bounds, not speed checks: generous, so a loaded or
# slow machine does not fail them (pytest-timeout stops a hung test at 900 s).
SLOW_MS = 600_000


def make_project(root: Path, reviewed: int = 6, n: int = 12, new_task: bool = False) -> Path:
    """Synthetic cines; a tiny untrained network as version v0001 (current); ``reviewed``
    scans corrected for dark_blob, the others predicted (so they are queued and re-predicted).

    ``new_task``: no model version and no predictions: dark_blob is a task no model knows yet.
    """
    import torch

    rng = np.random.default_rng(0)
    with Project.create(root, tasks=[Task(t) for t in SYNTHETIC_TASKS]) as project:
        if not new_task:
            staged = ver.new_staging(root)
            torch.manual_seed(0)
            model = build_model(
                "propl-small", tasks=SYNTHETIC_TASKS, input_size=64, pretrained=True
            )
            save_checkpoint(model, staged)
            ver.add_version(root, staged, {"outcome": "better", "parent": "shipped", "tasks": []})
            project.set_current("v0001", "test setup")
        for i in range(n):
            frames = [make_scan(64, rng) for _ in range(2)]
            image = np.stack([f[0] for f in frames])
            dark = np.stack([f[2] for f in frames])
            sid = project.add_scan(image, f"scan{i:02d}")
            if i < reviewed:
                project.save_review(sid, TASK, "corrected", dark)
            elif not new_task:
                zeros = np.zeros_like(dark)
                project.save_prediction(
                    sid, TASK, zeros, zeros.astype(np.float16), np.full(2, 0.5 + i / 100), "v0001"
                )
    return root


def dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


def widgets(viewer, qtbot, project: Path, monkeypatch):
    review = dock(viewer, "Review (ProPL)")
    seg = dock(viewer, "Segment (ProPL)")
    retrain = dock(viewer, "Retrain (ProPL)")
    command = retrain.command
    monkeypatch.setattr(retrain, "command", lambda: command() + FAST)
    qtbot.wait(50)  # the widgets join the window's session on the next event-loop turn
    review.open_project(project)
    review.task_combo.setCurrentText(TASK)
    wait_queue(qtbot, review)
    return review, seg, retrain


def wait_queue(qtbot, review) -> None:
    """The review queue is read in a worker: wait until the list shows the store."""
    qtbot.waitUntil(lambda: not review.queue_pending, timeout=30_000)


def wait_repredicted(qtbot, retrain, review, timeout: int = SLOW_MS) -> None:
    """Re-prediction (a worker) is done and the re-ordered queue is listed."""
    qtbot.waitUntil(lambda: not retrain.busy, timeout=timeout)
    wait_queue(qtbot, review)


def wait_done(qtbot, retrain, timeout=SLOW_MS) -> None:
    qtbot.waitUntil(lambda: not retrain.running, timeout=timeout)


def test_retrain_promotes_repredicts_and_reorders_the_queue(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    project_path = make_project(tmp_path / "p.zarr")
    review, seg, retrain = widgets(viewer, qtbot, project_path, monkeypatch)
    assert "current model: v0001" in retrain.model_label.text()
    assert seg.model_edit.text().endswith("v0001")  # the Segment widget follows the project
    queue_before = review.queue_ids()

    retrain.steps.setValue(40)
    settled: list[dict] = []
    retrain.round_settled.connect(settled.append)
    received: list[dict] = []
    retrain.event_received.connect(received.append)
    retrain.start()
    assert retrain.running and not retrain.run_button.isEnabled()
    assert gc.get_freeze_count() > 0  # no long full collections while it trains
    # the GUI keeps working meanwhile: the annotator can accept a scan while it trains
    review.load(queue_before[0])
    qtbot.waitUntil(lambda: review.scan_id == queue_before[0], timeout=30_000)
    wait_done(qtbot, retrain)
    assert received == retrain.events

    kinds = [e["kind"] for e in retrain.events]
    assert kinds[0] == "prepare" and kinds.count("step") == 40 and "eval" in kinds
    assert len(retrain.plot.loss) >= 20 and retrain.plot.dice  # the live curves were drawn
    assert retrain.progress.value() in (40, retrain.progress.maximum())
    version = next(e for e in retrain.events if e["kind"] == "version")["data"]
    assert version["version"] == "v0002" and version["outcome"] == "better"

    project = review.session.project
    assert project.current_version().name == "v0002"
    assert "current model: v0002" in retrain.model_label.text()
    assert seg.model_edit.text().endswith("v0002")  # hot swap: the next segmentation uses it
    # re-predicted in a worker with the new version; the queue re-ordered by the new scores
    # the round is settled once, after the re-prediction
    qtbot.waitUntil(lambda: bool(settled), timeout=SLOW_MS)
    assert not retrain.busy
    assert gc.get_freeze_count() == 0  # the collector has every object back
    unreviewed = [q.scan_id for q in project.queue(TASK)]
    assert {project.prediction(s, TASK).model_version for s in unreviewed} == {"v0002"}
    assert settled == [
        {
            "outcome": "better",
            "version": "v0002",
            "promoted": True,
            "status": retrain.status_label.text(),
        }
    ]
    wait_repredicted(qtbot, retrain, review)
    confidences = [project.prediction_confidence(s, TASK) for s in review.queue_ids()]
    assert confidences == sorted(confidences)
    assert "re-ordered" in retrain.status_label.text()
    # the open (unreviewed) scan now shows the new version's prediction, not the old one
    shown = queue_before[0]
    new_mask = project.prediction(shown, TASK).mask
    qtbot.waitUntil(
        lambda: review.scan_id == shown and np.array_equal(review.labels_layer.data, new_mask),
        timeout=30_000,
    )
    # the Segment widget lists the review image under its current (renamed) name
    image_names = [seg.image_combo.itemText(i) for i in range(seg.image_combo.count())]
    assert any(project.scan(shown).name in n for n in image_names)

    # rollback to v0001 and to the shipped model, from the version list
    retrain.versions.setCurrentRow(1)  # newest first: row 1 is v0001
    retrain.use_button.click()
    assert project.current_version().name == "v0001"
    assert seg.model_edit.text().endswith("v0001")
    wait_repredicted(qtbot, retrain, review)
    retrain.shipped_button.click()
    assert project.current_version() is None
    assert "weights" in seg.model_edit.text() and "p.zarr" not in seg.model_edit.text()
    wait_repredicted(qtbot, retrain, review)


def test_cancel_auto_retrain_and_new_task(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    project_path = make_project(tmp_path / "p.zarr")
    review, _seg, retrain = widgets(viewer, qtbot, project_path, monkeypatch)
    project = review.session.project
    before = {s: project.review(s, TASK) for s in project.scan_ids()}

    # automatic retraining after N reviews, with the strong view, then Cancel
    retrain.steps.setValue(100000)
    retrain.auto_every.setValue(2)
    assert retrain.strong_view.isChecked()  # the default, the core's: no flag needed
    review.session.review_saved.emit("rejected")  # not a label: does not count
    review.session.review_saved.emit("accepted")
    assert not retrain.running
    review.session.review_saved.emit("corrected")
    assert retrain.running
    qtbot.waitUntil(lambda: any(e["kind"] == "step" for e in retrain.events), timeout=SLOW_MS)
    assert "--view" not in retrain.process.arguments()
    start = next(e["data"] for e in retrain.events if e["kind"] == "start")
    assert start["view"] == "strong" and not start["cached_features"]
    with qtbot.waitSignal(retrain.round_settled, timeout=60_000) as settled:
        retrain.cancel_button.click()
    assert not retrain.running
    assert "cancelled" in retrain.status_label.text()
    assert settled.args[0]["outcome"] == "cancelled" and not settled.args[0]["promoted"]
    assert gc.get_freeze_count() == 0
    assert [v.name for v in project.versions()] == ["v0001"]
    assert project.current_version().name == "v0001"
    for sid, r in before.items():
        after = project.review(sid, TASK)
        assert (after is None) == (r is None)
        if r is not None:
            assert after.revision == r.revision

    # a new task: added to the project, the queue switches to it, and the shown scan is
    # reloaded for it (an Accept then saves the new task's mask, not the old task's)
    shown = review.queue_ids()[0]
    review.load(shown)
    qtbot.waitUntil(lambda: review.scan_id == shown and review.scan_task == TASK, timeout=30_000)
    review.add_task(Task("cyst", "kidney", "cyst", "kidney cyst", "#00ff00"))
    assert "cyst" in [t.id for t in project.tasks]
    assert review.task_combo.currentText() == "cyst"
    wait_queue(qtbot, review)
    assert len(review.queue_ids()) == 12  # every scan is unreviewed for it
    qtbot.waitUntil(lambda: review.scan_task == "cyst", timeout=30_000)
    assert review.scan_id == shown and not np.asarray(review.labels_layer.data).any()
    review.accept()
    review.wait_saved()
    assert project.review(shown, "cyst").status == "accepted"
    assert project.review(shown, TASK) is None  # nothing saved under the old task
    with pytest.raises(ValueError):
        Task("Bad Name")


def test_add_a_model_makes_it_current_and_a_bad_folder_is_named(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """ "Add a model…": a lab's own checkpoint becomes a version, current, and the Segment
    widget follows it; a folder that is not a checkpoint is named and changes nothing."""
    import torch

    from napari_propl import _retrain

    errors: list[str] = []
    monkeypatch.setattr(_retrain, "show_error", errors.append)
    viewer = make_napari_viewer()
    project_path = make_project(tmp_path / "p.zarr")
    review, seg, retrain = widgets(viewer, qtbot, project_path, monkeypatch)
    project = review.session.project

    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "model.json").write_text("{")
    (bad / "model.safetensors").write_bytes(b"")
    worker = retrain.add_model(str(bad))
    qtbot.waitUntil(lambda: retrain._import_worker is None, timeout=60_000)
    assert errors and str(bad) in errors[-1]
    assert [v.name for v in project.versions()] == ["v0001"]
    assert project.current_version().name == "v0001" and retrain.add_button.isEnabled()

    torch.manual_seed(1)
    lab = tmp_path / "lab-model"
    save_checkpoint(build_model("propl-small", tasks=["dark_blob"], input_size=64), lab)
    monkeypatch.setattr(_retrain.QFileDialog, "getExistingDirectory", lambda *a, **k: str(lab))
    retrain.add_button.click()  # the dialog answers with the lab's folder
    worker = retrain._import_worker
    assert worker is not None
    qtbot.waitUntil(lambda: retrain._import_worker is None, timeout=60_000)
    assert project.current_version().name == "v0002"
    assert project.current_version().outcome == "imported"
    assert "current model: v0002" in retrain.model_label.text()
    assert "v0002 (imported)" in retrain.versions.item(0).text()
    assert seg.model_edit.text().endswith("v0002")  # the next segmentation uses it
    assert [seg.task_combo.itemText(i) for i in range(seg.task_combo.count())] == ["dark_blob"]
    assert str(lab.resolve()) in project.model_history()[-1]["reason"]
    wait_repredicted(qtbot, retrain, review)
    unreviewed = [q.scan_id for q in project.queue(TASK)]
    assert {project.prediction(s, TASK).model_version for s in unreviewed} == {"v0002"}


def test_a_new_task_learnt_from_its_first_corrections_gets_its_queue_predicted(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The project's model (added with "Add a model…") knows bright_blob only; six scans are
    corrected for dark_blob. Retrain: the version that gained dark_blob is promoted, and the
    scans nobody has reviewed get dark_blob predictions, least confident first in the queue."""
    import torch

    viewer = make_napari_viewer()
    project_path = make_project(tmp_path / "p.zarr", new_task=True)
    review, seg, retrain = widgets(viewer, qtbot, project_path, monkeypatch)
    project = review.session.project
    torch.manual_seed(0)
    lab = tmp_path / "lab-model"
    model = build_model("propl-small", tasks=["bright_blob"], input_size=64, pretrained=True)
    save_checkpoint(model, lab)
    retrain.add_model(str(lab))
    qtbot.waitUntil(lambda: retrain._import_worker is None, timeout=60_000)
    wait_repredicted(qtbot, retrain, review)
    assert project.current_version().name == "v0001"
    unreviewed = review.queue_ids()
    assert len(unreviewed) == 6
    assert all(project.prediction_confidence(s, TASK) is None for s in unreviewed)

    retrain.steps.setValue(40)
    retrain.start()
    wait_done(qtbot, retrain)
    version = next(e for e in retrain.events if e["kind"] == "version")["data"]
    assert version["outcome"] == "better" and version["baseline"] == "v0001", version
    assert project.current_version().name == "v0002"
    assert "dark_blob" in [seg.task_combo.itemText(i) for i in range(seg.task_combo.count())]
    wait_repredicted(qtbot, retrain, review)
    assert {project.prediction(s, TASK).model_version for s in unreviewed} == {"v0002"}
    assert "6 scans re-predicted" in retrain.status_label.text()
    confidences = [project.prediction_confidence(s, TASK) for s in review.queue_ids()]
    assert len(confidences) == 6 and confidences == sorted(confidences)
    # bright_blob was never segmented in this project: it stays that way
    assert all(project.prediction_confidence(s, "bright_blob") is None for s in unreviewed)


def test_steps_auto_and_the_weak_view_are_flags_only_when_chosen(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """auto steps and the strong view are the core's defaults: the command leaves them to it
    (a new task then gets the new-task recipe's steps and views); the user's choices go in."""
    viewer = make_napari_viewer()
    _review, _seg, retrain = widgets(viewer, qtbot, make_project(tmp_path / "p.zarr"), monkeypatch)
    assert retrain.steps.text() == "auto"
    args = retrain.command()
    assert "--steps" not in args and "--view" not in args and "--unsup-weight" not in args
    retrain.steps.setValue(40)
    retrain.strong_view.setChecked(False)
    line = " ".join(retrain.command()) + " "
    assert " --steps 40 " in line and " --view weak --unsup-weight 6 " in line
