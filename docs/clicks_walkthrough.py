"""Click to fix on real thyroid scans, driven through the Review widget with the shipped model;
writes the user-guide screenshot of the click tool and checks what the store holds.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/clicks_walkthrough.py --data DATA

1. A project with three thyroid test scans, segmented by the shipped model (Segment would do
   the same), opened in the Review widget; the least confident scan first.
2. **Click to fix** on: the simulated annotator's clicks (largest error region, its deepest
   point) are sent through the tool, three per scan; each refines the mask in place.
3. The scans stay drafts until confirmed; **Save correction** confirms each; the review's
   provenance holds the clicks.
4. pydicom's 30-frame echo cine, segmented for ``left_heart``: on frame 0, **Propagate
   through the cine** carries that frame's mask through the cine until the model is unsure;
   the frames reached are drafts (not labels) until confirmed, and **Save correction** then
   confirms the frame on screen and every frame propagation edited.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from gui_driver import new_viewer, pump, wait  # docs/gui_driver.py

IMAGES = Path(__file__).parent / "images"
TASK = "thyroid_nodule"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/us-universal"))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    from propl.annotation import predict_scan
    from propl.data.readers import read_mask
    from propl.inference import Predictor, default_model_path
    from propl.interactive import next_click
    from propl.store import Project

    work = args.workdir or Path(tempfile.mkdtemp(prefix="propl-clicks-"))
    path = work / "thyroid.zarr"
    splits = json.loads((args.data / "splits.json").read_text())[TASK]["test"]
    names = sorted(splits)[:3]
    folder = args.data / TASK
    truths = {}
    predictor = Predictor.from_checkpoint(default_model_path(), device="cpu")
    with Project.create(path) as project:
        for name in names:
            image = next((folder / "images").glob(f"{Path(name).stem}.*"))
            sid = project.add_file(image)
            truths[sid] = read_mask(next((folder / "masks").glob(f"{Path(name).stem}.*")))
            predict_scan(project, predictor, sid, TASK)
    viewer = new_viewer()
    review = viewer.window.add_plugin_dock_widget("napari-propl", "Review (ProPL)")[1]
    review.open_project(path)
    review.task_combo.setCurrentText(TASK)
    wait(lambda: review.queue_list.count() == 3)
    for n, sid in enumerate(review.queue_ids()):
        review.load(sid)
        wait(lambda sid=sid: review.scan_id == sid)
        review.buttons["click"].click()
        truth = truths[sid]
        for _ in range(3):
            click = next_click(np.asarray(review.labels_layer.data[0]) > 0, truth > 0)
            if click is None:
                break
            review.clicks.submit(0, y=click.y, x=click.x, positive=click.positive)
            review.clicks.wait()
            pump(0.5)
        if n == 0:
            shot = IMAGES / "clicks-1-thyroid.png"
            viewer.screenshot(str(shot), canvas_only=False)
            print("screenshot", shot)
        review.buttons["save"].click()
        review.wait_saved()
        pump(0.5)
        saved = review.core.require_project().review(sid, TASK)
        mask = saved.mask[0] > 0
        iou = (mask & (truth > 0)).sum() / max(1, (mask | (truth > 0)).sum())
        print(f"{sid}: {saved.status}, clicks {saved.provenance.get('clicks')}, IoU {iou:.2f}")
        assert saved.is_labelled and saved.provenance.get("clicks", 0) >= 1
    propagate_cine(viewer, review, work, predictor)
    viewer.close()
    return 0


def propagate_cine(viewer, review, work: Path, predictor) -> None:
    """Part 4: propagation through the sample echo cine (see the module's docstring)."""
    from propl.annotation import predict_scan
    from propl.demo import sample_cine
    from propl.store import Project

    path = work / "echo.zarr"
    with Project.create(path) as project:
        sid = project.add_file(sample_cine()[1])
        predict_scan(project, predictor, sid, "left_heart")
    review.open_project(path)
    review.task_combo.setCurrentText("left_heart")
    wait(lambda: review.queue_list.count() == 1)
    review.load(sid)
    wait(lambda: review.scan_id == sid)
    viewer.dims.set_current_step(0, 0)
    review.clicks.propagate()
    wait(lambda: "propagated" in review.status_label.text(), timeout=120)
    pump(0.5)
    print("status:", review.status_label.text())
    viewer.dims.set_current_step(0, 15)  # a frame the mask was carried to
    pump(0.5)
    shot = IMAGES / "clicks-2-propagate.png"
    viewer.screenshot(str(shot), canvas_only=False)
    print("screenshot", shot)
    review.save_draft()
    review.wait_saved()
    draft = review.core.require_project().review(sid, "left_heart")
    reached = int(draft.provenance.get("propagated_frames", 0))
    print(f"draft: {draft.status}, labelled {draft.is_labelled}, propagated frames {reached}")
    assert draft.status == "draft" and not draft.is_labelled and reached >= 1
    review.buttons["save"].click()
    review.wait_saved()
    pump(0.5)
    saved = review.core.require_project().review(sid, "left_heart")
    labelled = len(saved.labelled_frames)
    print(f"saved: {saved.status}, labelled frames {labelled} of {len(saved.frames)}")
    assert saved.is_labelled and labelled >= reached


if __name__ == "__main__":
    sys.exit(main())
