"""Screenshot of the plugin for the docs: sample echo cine segmented, review queue open.

xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshot.py MODEL_DIR [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari

from napari_propl._sample_data import echo_cine


def wait(app, until, timeout=300.0) -> None:
    t0 = time.time()
    while not until() and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    model, out = (
        Path(sys.argv[1]),
        Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/plugin.png"),
    )
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    [(data, kwargs, _)] = echo_cine()
    layer = viewer.add_image(data, **kwargs)
    _, review = viewer.window.add_plugin_dock_widget("napari-propl", "Review (ProPL)")
    _, seg = viewer.window.add_plugin_dock_widget("napari-propl", "Segment (ProPL)")
    app = napari.qt.get_qapp()
    review.open_project(Path(tempfile.mkdtemp()) / "study.zarr", create=True)
    review.task_combo.setCurrentText("left_heart")
    review.add_open_images()
    while review.queue_list.count() < 1:  # added in a worker
        app.processEvents()
    seg.model_edit.setText(str(model))
    seg._refresh_tasks()
    seg.task_combo.setCurrentText("left_heart")
    seg.scope_combo.setCurrentText("all frames")
    seg.image_combo.setCurrentText(layer.name)
    seg.run()
    wait(app, seg.run_button.isEnabled)
    review.refresh_queue()
    while review.queue_pending:  # read in a worker
        app.processEvents()
    viewer.dims.set_current_step(0, 12)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(out)
    viewer.close()


if __name__ == "__main__":
    main()
