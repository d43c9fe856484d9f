"""A structure the shipped model has never seen, taught in napari as a new user does it: the
brachial plexus nerve (us-new-task-dev), the shipped model, New task…, ten corrections and
Retrain with its defaults (steps "auto": the core's new-task recipe); the real ``propl train``
subprocess. Writes the user guide's nerve screenshots and a log.

    xvfb-run -a -s "-screen 0 1600x1000x24" nice -n 5 .venv/bin/python \\
        docs/nerve_walkthrough.py [--data /path/to/us-new-task-dev] [--out DIR] \\
        > docs/logs/nerve_walkthrough.log

1. Plugins > ProPL > Review, Segment and Retrain; a new project (in --out, never in the
   repository) with the shipped model; Review's New task… dialog filled in (name
   brachial_plexus, organ neck, target "brachial plexus nerve") and OK; the first 24 scans of
   the train split imported as files.
2. Review: nothing can be predicted for a task the model does not know, so each of ten scans
   is drawn (the ground-truth outline written into the empty Labels layer as one undoable
   edit, which the widget autosaves as a correction) and Ctrl+Enter moves on.
3. Retrain, steps left at "auto"; screenshot half-way (progress with elapsed/ETA, the plot);
   when done, the version is judged against the shipped model on the held-back scans, promoted
   if surely better, the other 14 scans predicted and the queue ordered least confident first;
   screenshot; then the most confident scan opened (its predicted mask); screenshot. The log
   gives each re-predicted scan's Dice against its (train-split) ground truth.

Screenshots: docs/images/nerve-{1-running,2-done,3-mask}.png.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from gui_driver import new_viewer, pump, wait  # docs/gui_driver.py
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QDialogButtonBox
from retrain_walkthrough import (  # docs/retrain_walkthrough.py
    close,
    import_scans,
    log,
    log_phases,
    open_widgets,
    shot,
    train_scans,
    walkthrough_args,
)

from propl.data.readers import read_mask
from propl.metrics import dice

TASK = "brachial_plexus"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "us-new-task-dev"


def nerve_shot(viewer, images: Path, name: str) -> None:
    """retrain_walkthrough's whole-window shot, saved as nerve-{name}.png."""
    with tempfile.TemporaryDirectory() as tmp:
        out = shot(viewer, Path(tmp), name)
        images.mkdir(parents=True, exist_ok=True)
        shutil.move(out, images / f"nerve-{name}.png")


def new_task_dialog(review, name: str, organ: str, target: str) -> None:
    """Click New task…, fill in the dialog and press OK (it is modal: filled from a timer)."""

    def fill() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(100, fill)
            return
        dialog.name.setText(name)
        dialog.organ.setText(organ)
        dialog.target.setText(target)
        log(f"New task dialog: {name}, {organ}, {target!r}, colour {dialog.colour}")
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok).click()

    QTimer.singleShot(300, fill)
    review.new_task_button.click()  # returns when the dialog is closed


def correct_scans(review, truth: dict, n: int) -> None:
    """From Next: on each of ``n`` scans the outline is drawn (the ground truth written into the
    Labels layer as one undoable edit, autosaved as a draft), Save correction makes it a label,
    Next moves on."""
    project = review.session.project
    done: list[str] = []
    for _ in range(n):
        review.buttons["next"].click()
        wait(lambda: review.scan_id not in (None, *done), timeout=60, what="next scan")
        pump(0.3)
        sid = review.scan_id
        name = project.scan(sid).name
        gt = read_mask(truth[name])[None]
        labels = review.labels_layer
        diff = np.asarray(labels.data) != gt
        labels.data_setitem(np.nonzero(diff), gt[diff])
        review.buttons["save"].click()
        wait(lambda: "corrected" in review.status_label.text(), timeout=30, what="saved")
        review.wait_saved()
        r = project.review(sid, TASK, with_mask=False)
        log(f"{name}: {r.status}, {r.edited_pixels} edited pixels")
        done.append(sid)


def main() -> None:
    parser = walkthrough_args(__doc__)
    parser.set_defaults(data=DEFAULT_DATA)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="propl-nerve-"))
    project_path = out / "nerve.zarr"
    samples, truth = train_scans(args.data, TASK, args.scans)

    viewer = new_viewer()
    # 1. widgets, a new project (the shipped model), New task…, the scans
    review, seg, retrain = open_widgets(viewer, project_path)
    log(retrain.model_label.text(), "|", seg.model_edit.text())
    new_task_dialog(review, TASK, "neck", "brachial plexus nerve")
    project = review.session.project
    task = next(t for t in project.tasks if t.id == TASK)
    log("task added:", task, "| Review task:", review.task_combo.currentText())
    assert review.task_combo.currentText() == TASK
    import_scans(review, [str(s.image) for s in samples])
    log("queue:", review.queue_list.count(), "scans")

    # 2. draw ten scans (no prediction: each starts from an empty mask)
    correct_scans(review, truth, args.corrected)
    wait(lambda: not review.queue_pending, timeout=60, what="the queue")

    # 3. Retrain with the defaults: steps "auto", no flags
    assert retrain.steps.specialValueText() == "auto" and retrain.steps.value() == 0
    t_start = time.time()
    retrain.run_button.click()
    log("retraining:", " ".join(retrain.command()[1:]))
    stamps: list[tuple[float, int]] = []
    retrain.process.readyReadStandardOutput.connect(
        lambda: stamps.append((time.time(), len(retrain.events)))
    )
    ticker = QTimer()  # where the round is, each minute (a busy CPU can make it slow)
    ticker.timeout.connect(lambda: log("  progress:", retrain.progress.text()))
    ticker.start(60_000)
    wait(lambda: any(e["kind"] == "prepare" for e in retrain.events), what="prepare")
    prepare = next(e for e in retrain.events if e["kind"] == "prepare")
    total = retrain.progress.maximum()
    log(
        f"prepared: {prepare.get('total')} steps (progress bar to {total});",
        retrain.status_label.text(),
    )
    wait(
        lambda: (
            not retrain.running or (retrain.progress.value() >= total // 2 and retrain.plot.dice)
        ),
        timeout=3600,
        what="half-way",
    )
    log(f"half-way: step {retrain.progress.value()} of {total}; bar: {retrain.progress.text()}")
    nerve_shot(viewer, args.images, "1-running")
    wait(lambda: not retrain.running, timeout=3600, what="training")
    t_trained = time.time()
    ticker.stop()
    wait(lambda: not retrain.busy, timeout=600, what="prediction")
    pump(1.0)
    log(f"trained in {t_trained - t_start:.0f} s, predicted in {time.time() - t_trained:.0f} s")
    log_phases(retrain.events, stamps, t_start)
    log("status:", retrain.status_label.text())
    log("model:", retrain.model_label.text())
    log("versions:", [retrain.versions.item(i).text() for i in range(retrain.versions.count())])
    seg_tasks = [seg.task_combo.itemText(i) for i in range(seg.task_combo.count())]
    log("Segment model:", seg.model_edit.text(), "tasks:", seg_tasks)

    # the queue, least confident first; the top opened; each prediction against the truth
    wait(lambda: not review.queue_pending, timeout=60, what="the re-ordered queue")
    queue = review.queue_ids()
    scores = []
    for sid in queue:
        name, pred = project.scan(sid).name, project.prediction(sid, TASK)
        conf = project.prediction_confidence(sid, TASK)
        gt = read_mask(truth[name])[None]
        d = 100 * dice(pred.mask, gt) if pred is not None else float("nan")
        scores.append(d)
        log(f"  queue {name}: confidence {'-' if conf is None else f'{conf:.3f}'}, Dice {d:.1f}")
    if scores:
        log(f"re-predicted scans: mean Dice {np.nanmean(scores):.1f} vs their ground truth")
    if queue:
        review.queue_list.itemActivated.emit(review.queue_list.item(0))
        wait(lambda: review.scan_id == queue[0], timeout=60, what="top of the queue")
        pump(1.0)
        log(f"top of the queue {project.scan(queue[0]).name} opened")
    nerve_shot(viewer, args.images, "2-done")
    if queue:  # the most confident scan: a predicted nerve
        last = review.queue_list.count() - 1
        review.queue_list.itemActivated.emit(review.queue_list.item(last))
        wait(lambda: review.scan_id == queue[-1], timeout=60, what="bottom of the queue")
        pump(1.0)
        shown = int(np.asarray(review.labels_layer.data).sum())
        log(f"most confident {project.scan(queue[-1]).name} opened: {shown} px predicted")
    nerve_shot(viewer, args.images, "3-mask")
    close(viewer, review, project_path)


if __name__ == "__main__":
    main()
