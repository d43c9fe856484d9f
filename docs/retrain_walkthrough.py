"""Retraining from your reviews, as a new user does it: real thyroid scans, the shipped model,
the real ``propl train`` subprocess; writes the README's Retrain screenshots.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/retrain_walkthrough.py \\
        --data /path/to/us-universal [--out DIR] [--steps 150]

1. Plugins > ProPL > Review, Segment and Retrain (ProPL); a new project (in --out, never in
   the repository); the first 24 thyroid_nodule train scans of the data folder imported as
   files (what "Import files…" does after its dialog).
2. Segment, scope "all scans in the project", shipped model, task thyroid_nodule.
3. Review, least confident first: Next; on each of ten scans the mask is corrected (the
   reviewed ground truth written into the Labels layer as one undoable edit, which the widget
   autosaves as a correction) and Ctrl+Enter moves on; the eleventh is accepted unedited.
4. Retrain with the default 150 steps (about a minute and a half on a 2-core CPU);
   screenshot half-way (live loss and held-back Dice), then when it is done and, if the
   version was promoted, the unreviewed scans re-predicted and the top of the re-ordered
   queue opened.

Screenshots: docs/images/retrain-{1-running,2-done}.png (--images to change). A new task taught
from its first corrections: docs/new_task_walkthrough.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from gui_driver import dock, menu_action, new_viewer, pump, wait  # docs/gui_driver.py
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QDockWidget

from propl.data.benchmark import BenchmarkFolder
from propl.data.readers import read_mask

TASK = "thyroid_nodule"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "us-universal"
MAX_PNG_BYTES = 400_000
T0 = time.time()


def log(*args: object) -> None:
    print(f"[{time.time() - T0:6.1f} s]", *args, flush=True)


def qdock(widget) -> QDockWidget:
    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    if w is None:
        raise LookupError(f"{widget} is not docked")
    return w


def arrange(viewer, review, seg, retrain) -> None:
    """Review full height on the right; beside it Retrain above Segment."""
    main = viewer.window._qt_window
    d_review, d_seg, d_retrain = qdock(review), qdock(seg), qdock(retrain)
    main.splitDockWidget(d_review, d_retrain, Qt.Horizontal)
    main.splitDockWidget(d_retrain, d_seg, Qt.Vertical)
    pump(0.3)
    viewer.window.resize(1600, 1000)  # three docks stacked at first made the window taller
    pump(0.3)
    main.resizeDocks([d_review, d_retrain], [390, 440], Qt.Horizontal)
    main.resizeDocks([d_retrain, d_seg], [640, 300], Qt.Vertical)
    pump(0.3)


def shot(viewer, images: Path, name: str) -> Path:
    """The whole window as a PNG (palette-quantised if it would be over MAX_PNG_BYTES)."""
    from PIL import Image

    viewer.reset_view()  # the Home button: the whole scan in the canvas
    pump(1.0)
    images.mkdir(parents=True, exist_ok=True)
    out = images / f"retrain-{name}.png"
    pixels = viewer.screenshot(canvas_only=False)
    img = Image.fromarray(np.asarray(pixels)[..., :3])
    img.save(out, optimize=True)
    if out.stat().st_size > MAX_PNG_BYTES:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    log("screenshot", out, f"{img.size[0]}x{img.size[1]}", f"{out.stat().st_size // 1024} KB")
    return out


def log_phases(events: list[dict], stamps: list[tuple[float, int]], t_start: float) -> None:
    """When each kind of JSON line of the training run arrived, and the held-back evals."""

    def arrived(index: int) -> float:
        return next((t for t, n in stamps if n > index), float("nan")) - t_start

    kinds = [e["kind"] for e in events]
    steps = [i for i, k in enumerate(kinds) if k == "step"]
    for i, e in enumerate(events):
        if e["kind"] != "step":
            data = {k: v for k, v in e.get("data", {}).items() if k != "settings"}
            log(f"  +{arrived(i):5.1f} s {e['kind']} step {e.get('step', 0)} {data}")
    if len(steps) > 1:
        first, last = arrived(steps[0]), arrived(steps[-1])
        log(
            f"  steps: first at +{first:.1f} s, last at +{last:.1f} s: "
            f"{(last - first) / (len(steps) - 1):.2f} s/step"
        )


def send_ctrl_enter(viewer) -> None:
    window = viewer.window._qt_window
    window.activateWindow()
    window.raise_()
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    pump(0.1)
    QTest.keyClick(canvas, Qt.Key_Return, Qt.ControlModifier)


def open_top_of_queue(review, queue: list[str]) -> None:
    """Back to reviewing: the top of the (re-ordered) queue, as a double click on it does."""
    review.queue_list.itemActivated.emit(review.queue_list.item(0))
    wait(lambda: review.scan_id == queue[0], timeout=60, what="top of the queue")


def close(viewer, review, project_path: Path) -> None:
    """Every save stored, then napari closed (the project's lock goes with it)."""
    review.wait_saved()
    viewer.close()
    pump()
    log(f"done; project at {project_path}")


def open_widgets(viewer, project_path: Path):
    """Plugins > ProPL > Review, Segment and Retrain, arranged; a new project (what New… does
    after its file dialog). Returns the three widgets."""
    for name in ("Review (ProPL)", "Segment (ProPL)", "Retrain (ProPL)"):
        menu_action(viewer, "Plugins", "ProPL", name).trigger()
    pump()
    review = dock(viewer, "Review (ProPL)")
    seg = dock(viewer, "Segment (ProPL)")
    retrain = dock(viewer, "Retrain (ProPL)")
    arrange(viewer, review, seg, retrain)
    log("docked:", list(viewer.window.dock_widgets))
    review.open_project(project_path, create=True)
    return review, seg, retrain


def import_scans(review, files: list[str]) -> None:
    """What Import files… does after its dialog; waits for the worker."""
    imported = []
    worker = review.import_files(files)
    worker.finished.connect(lambda: imported.append(True))
    wait(lambda: imported, what="import")
    pump(0.5)


def review_scans(viewer, review, truth: dict, task: str, corrected: int, accepted: int = 0):
    """From Next: correct ``corrected`` scans (the reviewed outline written into the Labels
    layer as one undoable edit, which the widget autosaves as a draft), then accept
    ``accepted`` as they are; Ctrl+Enter confirms and moves on each time. Returns the reviewed
    scan ids."""
    project = review.session.project
    review.buttons["next"].click()
    reviewed: list[str] = []
    for i in range(corrected + accepted):
        wait(lambda: review.scan_id not in (None, *reviewed), timeout=60, what="next scan")
        pump(0.3)
        sid = review.scan_id
        name = project.scan(sid).name
        labels = review.labels_layer
        if i < corrected:
            gt = read_mask(truth[name])[None]
            diff = np.asarray(labels.data) != gt
            labels.data_setitem(np.nonzero(diff), gt[diff])
            # the edit is autosaved as a draft; Ctrl+Enter below confirms it (corrected)
            wait(lambda: "until confirmed" in review.status_label.text(), timeout=30, what="draft")
        send_ctrl_enter(viewer)
        try:
            wait(lambda sid=sid: review.scan_id != sid, timeout=10, what="Ctrl+Enter")
        except TimeoutError:
            log("Ctrl+Enter did not move on; clicking Accept")
            review.buttons["accept"].click()
        reviewed.append(sid)
        review.wait_saved()
        r = project.review(sid, task, with_mask=False)
        log(f"{name}: {r.status}, {r.edited_pixels} edited pixels")
    wait(lambda: review.scan_id not in (None, *reviewed), timeout=60, what="last scan")
    pump(0.5)
    return reviewed


def run_retrain(viewer, retrain, steps: int, images: Path, running_shot: str) -> None:
    """Retrain: a screenshot half-way (live loss and held-back Dice), then wait for the end
    and for the re-prediction; log when each kind of event arrived."""
    retrain.steps.setValue(steps)
    t_start = time.time()
    retrain.run_button.click()
    log("retraining:", " ".join(retrain.command()[1:]))
    stamps: list[tuple[float, int]] = []  # (time, events so far): after the widget's own slot
    retrain.process.readyReadStandardOutput.connect(
        lambda: stamps.append((time.time(), len(retrain.events)))
    )
    wait(lambda: any(e["kind"] == "prepare" for e in retrain.events), what="prepare")
    log("prepared:", retrain.status_label.text())
    wait(
        lambda: (
            not retrain.running or (retrain.progress.value() >= steps // 2 and retrain.plot.dice)
        ),
        what="half-way",
    )
    log(f"half-way: step {retrain.progress.value()} of {steps}")
    shot(viewer, images, running_shot)
    wait(lambda: not retrain.running, what="training")
    t_trained = time.time()
    wait(lambda: not retrain.busy, what="re-prediction")
    pump(1.0)
    log(f"trained in {t_trained - t_start:.0f} s, re-predicted in {time.time() - t_trained:.0f} s")
    log("version:", next((e["data"] for e in retrain.events if e["kind"] == "version"), None))
    log_phases(retrain.events, stamps, t_start)
    log("status:", retrain.status_label.text())
    log("model:", retrain.model_label.text())
    log("versions:", [retrain.versions.item(i).text() for i in range(retrain.versions.count())])


def train_scans(data: Path, task: str, n: int) -> tuple[list, dict]:
    """The first ``n`` train scans of ``task`` in a benchmark folder, and their masks by id."""
    samples = BenchmarkFolder(data).samples(task, "train")[:n]
    return samples, {s.id: s.mask for s in samples}


def walkthrough_args(doc: str) -> argparse.ArgumentParser:
    """The options both retraining walkthroughs take."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="us-universal folder")
    parser.add_argument("--out", type=Path, help="folder for the project (default: a temp dir)")
    parser.add_argument("--scans", type=int, default=24, help="scans to import")
    parser.add_argument("--corrected", type=int, default=10, help="scans to correct")
    parser.add_argument("--steps", type=int, default=150, help="retraining steps")
    parser.add_argument("--images", type=Path, default=Path(__file__).parent / "images")
    return parser


def main() -> None:
    args = walkthrough_args(__doc__).parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="propl-retrain-"))
    project_path = out / "thyroid.zarr"
    samples, truth = train_scans(args.data, TASK, args.scans)

    viewer = new_viewer()
    # 1. the widgets from the Plugins menu; a new project; import the scans
    review, seg, retrain = open_widgets(viewer, project_path)
    review.task_combo.setCurrentText(TASK)
    import_scans(review, [str(s.image) for s in samples])
    log("imported:", review.queue_list.count(), "scans;", retrain.model_label.text())

    # 2. segment every scan of the project with the shipped model
    assert seg.model_edit.text().endswith("weights/universal"), seg.model_edit.text()
    seg.task_combo.setCurrentText(TASK)
    seg.scope_combo.setCurrentText("all scans in the project")
    seg.run_button.click()
    wait(seg.run_button.isEnabled, what="segmentation")
    log(seg.result_label.text(), "|", seg.device_label.text())

    # 3. review: correct the ten least confident scans, accept the eleventh
    project = review.session.project
    review_scans(viewer, review, truth, TASK, args.corrected, accepted=1)
    wait(lambda: not review.queue_pending, timeout=60, what="the queue")  # read in a worker
    log(review.progress_label.text())
    queue_before = review.queue_ids()
    conf_before = {s: project.prediction_confidence(s, TASK) for s in queue_before}

    # 4. retrain: a short run; half-way, then done
    run_retrain(viewer, retrain, args.steps, args.images, "1-running")
    shown = review.scan_id
    pred = project.prediction(shown, TASK)
    stale = int(np.count_nonzero(np.asarray(review.labels_layer.data) != pred.mask))
    log(
        f"open scan {project.scan(shown).name}: stored prediction now {pred.model_version}; "
        f"the mask on screen differs from it in {stale} pixels"
    )
    wait(lambda: not review.queue_pending, timeout=60, what="the re-ordered queue")
    queue_after = review.queue_ids()
    log("queue before:", [f"{project.scan(s).name} {conf_before[s]:.3f}" for s in queue_before])
    conf_after = {s: project.prediction_confidence(s, TASK) for s in queue_after}
    log("queue after: ", [f"{project.scan(s).name} {conf_after[s]:.3f}" for s in queue_after])
    log("queue re-ordered:", queue_after != queue_before)
    open_top_of_queue(review, queue_after)
    log("Segment model:", seg.model_edit.text())
    shot(viewer, args.images, "2-done")
    close(viewer, review, project_path)


if __name__ == "__main__":
    main()
