"""A new task taught in napari from its first corrections, as a new user does it: real fetal
head scans, a model that has never seen a fetal head, the real ``propl train`` subprocess;
writes the README's new-task screenshots.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/new_task_walkthrough.py \\
        --data /path/to/us-universal --model runs/loto-fetal_head/best [--out DIR]

Every us-universal task is in the shipped model, so the starting model is the leave-one-task-out
model of ``benchmarks/new_task.py`` (the other four tasks, fetal_head never seen), added to the
project as a lab would add its own model.

1. Plugins > ProPL > Review, Segment and Retrain; a new project (in --out, never in the
   repository); Retrain: "Add a model…" with the --model folder (what it does after its
   dialog): the project's current model, and the Segment widget's. Its task list has no fetal
   head.
2. Review: task fetal_head. It is one of the built-in task prompts, so a new project lists it,
   but this model has never learnt it (a task under a new name comes from "New task…" and goes
   the same way); the first 24 fetal_head train scans imported as files.
3. Review, fetal_head: nothing can be predicted, so each of ten scans is drawn by the annotator
   (the reviewed outline written into the empty Labels layer as one undoable edit, which the
   widget autosaves as a correction) and Ctrl+Enter moves on.
4. Retrain (150 steps); screenshot half-way; when done: the version that learnt fetal_head is
   judged against the starting model on the held-back scans, promoted if surely better, the
   other 14 scans get predictions and the queue orders them least confident first; the top
   one opened; screenshot.

Screenshots: docs/images/retrain-{3-new-task-running,4-new-task-done}.png.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from gui_driver import new_viewer, pump, wait  # docs/gui_driver.py
from retrain_walkthrough import (  # docs/retrain_walkthrough.py
    close,
    import_scans,
    log,
    open_top_of_queue,
    open_widgets,
    review_scans,
    run_retrain,
    shot,
    train_scans,
    walkthrough_args,
)

from propl.tasks import Task

TASK = Task("fetal_head", "fetus", "head", "fetal head", "#ff9f1c")


def main() -> None:
    parser = walkthrough_args(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a model without fetal_head")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="propl-new-task-"))
    project_path = out / "fetal.zarr"
    samples, truth = train_scans(args.data, TASK.id, args.scans)

    viewer = new_viewer()
    # 1. widgets, a new project, the lab's model added
    review, seg, retrain = open_widgets(viewer, project_path)
    retrain.add_model(str(args.model))  # what Add a model… does after its dialog
    wait(lambda: retrain._import_worker is None, what="adding the model")
    wait(lambda: not retrain.busy, what="re-prediction")
    pump(0.5)
    log(retrain.model_label.text(), "|", retrain.versions.item(0).text())
    seg_tasks = [seg.task_combo.itemText(i) for i in range(seg.task_combo.count())]
    log("Segment model:", seg.model_edit.text(), "tasks:", seg_tasks)
    assert TASK.id not in seg_tasks, seg_tasks

    # 2. the task, then the scans
    project = review.session.project
    if TASK.id in [t.id for t in project.tasks]:  # a built-in prompt the model never learnt
        review.task_combo.setCurrentText(TASK.id)
    else:
        review.add_task(TASK)  # what the New task… dialog does on OK
    assert review.task_combo.currentText() == TASK.id
    import_scans(review, [str(s.image) for s in samples])
    log("task", review.task_combo.currentText(), "queue:", review.queue_list.count(), "scans")

    # 3. draw ten scans (no prediction: each starts from an empty mask)
    review_scans(viewer, review, truth, TASK.id, args.corrected)
    wait(lambda: not review.queue_pending, timeout=60, what="the queue")  # read in a worker
    queue_before = review.queue_ids()

    # 4. retrain
    run_retrain(viewer, retrain, args.steps, args.images, "3-new-task-running")
    wait(lambda: not review.queue_pending, timeout=60, what="the re-ordered queue")
    queue_after = review.queue_ids()
    conf = {s: project.prediction_confidence(s, TASK.id) for s in queue_after}
    log("queue before:", [project.scan(s).name for s in queue_before])
    log(
        "queue after: ",
        [
            f"{project.scan(s).name} {'-' if conf[s] is None else f'{conf[s]:.3f}'}"
            for s in queue_after
        ],
    )
    seg_tasks = [seg.task_combo.itemText(i) for i in range(seg.task_combo.count())]
    log("Segment model:", seg.model_edit.text(), "tasks:", seg_tasks)
    if queue_after:
        open_top_of_queue(review, queue_after)
        pump(1.0)
        shown = np.asarray(review.labels_layer.data)
        log(f"top of the queue {project.scan(queue_after[0]).name}: {int(shown.sum())} px")
    shot(viewer, args.images, "4-new-task-done")
    close(viewer, review, project_path)


if __name__ == "__main__":
    main()
