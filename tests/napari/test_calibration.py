"""Calibrate on a known distance: a line drawn on the scan and its length in mm give the scan
a pixel spacing that the measurements line, the project and the export use."""

from __future__ import annotations

import numpy as np
import pytest

from propl.store import Project

pytest.importorskip("napari")

from napari_propl import _calibration  # noqa: E402
from napari_propl._calibration import LAYER_NAME, mm_per_pixel  # noqa: E402

PLUGIN = "napari-propl"


def test_mm_per_pixel_from_a_line_and_its_length() -> None:
    assert mm_per_pixel(np.array([[0, 0], [30, 40]]), 10.0) == pytest.approx(0.2)
    # a cine's line has the frame first; a path counts every segment
    assert mm_per_pixel(np.array([[4, 0, 0], [4, 0, 50]]), 5.0) == pytest.approx(0.1)
    assert mm_per_pixel(np.array([[0, 0], [0, 20], [20, 20]]), 8.0) == pytest.approx(0.2)
    for line, length in (([[0, 0], [0, 0.5]], 1.0), ([[0, 0], [0, 9]], 0.0)):
        with pytest.raises(ValueError):
            mm_per_pixel(np.array(line), length)
    with pytest.raises(ValueError):
        mm_per_pixel(np.array([[0, 0], [0, 9]]), float("nan"))


def draw(review, qtbot, line) -> None:
    """What the user does: Calibrate…, a line drawn (napari's 'added' event), then the dialog."""
    layer = review.calibration.start()
    assert layer is not None and layer.name == LAYER_NAME and layer.mode == "add_line"
    layer.add_lines(np.asarray(line, float))
    qtbot.waitUntil(lambda: LAYER_NAME not in review.viewer.layers, timeout=5_000)


def test_a_png_layer_gets_spacing_and_scale(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((60, 80), np.uint8), name="still")
    mask = viewer.add_labels(np.zeros((60, 80), np.uint8), name="mask · still [thyroid_nodule]")
    mask.metadata["propl_role"] = "mask"
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    monkeypatch.setattr(_calibration, "ask_length", lambda parent: 12.0)
    viewer.layers.selection.active = image
    draw(review, qtbot, [[10, 10], [10, 70]])  # 60 px = 12 mm
    assert image.metadata["propl_spacing_mm"] == pytest.approx((0.2, 0.2))
    assert tuple(image.scale) == pytest.approx((0.2, 0.2))
    assert tuple(mask.scale) == pytest.approx((0.2, 0.2))  # its segmentation follows
    assert "0.2 mm per pixel" in review.status_label.text()


def project_with_scan(path, spacing=None, modality=None):
    shape = (2, 40, 60)
    with Project.create(path) as p:
        sid = p.add_scan(
            np.full(shape, 60, np.uint8), "scan", spacing_mm=spacing, modality=modality
        )
        mask = np.zeros(shape, np.uint8)
        mask[:, 10:30, 10:50] = 1
        p.save_prediction(sid, "fetal_head", mask, np.zeros(shape), np.full(2, 0.7), "v1")
    return sid


def review_scan(viewer, qtbot, path, sid):
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(path)
    review.task_combo.setCurrentText("fetal_head")
    qtbot.waitUntil(lambda: review.queue_list.count() == 1, timeout=30_000)
    review.load(sid)
    qtbot.waitUntil(lambda: review.scan_id == sid, timeout=30_000)
    return review


def test_a_project_scan_is_calibrated_in_the_store(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    path = tmp_path / "p.zarr"
    sid = project_with_scan(path)
    viewer = make_napari_viewer()
    review = review_scan(viewer, qtbot, path, sid)
    qtbot.waitUntil(lambda: "pixels" in review.measurements.text(), timeout=5_000)
    monkeypatch.setattr(_calibration, "ask_length", lambda parent: 10.0)
    asked: list[str] = []
    monkeypatch.setattr(_calibration, "confirm_override", lambda p, text: asked.append(text))
    draw(review, qtbot, [[0, 5, 5], [0, 5, 55]])  # 50 px = 10 mm, on the cine's frame 0
    assert not asked  # nothing to replace
    assert review.session.project.scan(sid).spacing_mm == pytest.approx((0.2, 0.2))
    # the measurements line in mm at once: 20 x 40 px = 32 mm²
    assert review.measurements.text().startswith("area 32.0 mm²")
    assert tuple(review.labels_layer.scale) == pytest.approx((1.0, 0.2, 0.2))


def test_a_dicom_spacing_is_replaced_only_when_agreed(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    path = tmp_path / "p.zarr"
    sid = project_with_scan(path, spacing=(0.3, 0.3), modality="US")
    viewer = make_napari_viewer()
    review = review_scan(viewer, qtbot, path, sid)
    monkeypatch.setattr(_calibration, "ask_length", lambda parent: 10.0)
    answers, asked = [False, True], []

    def confirm(parent, text):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(_calibration, "confirm_override", confirm)
    draw(review, qtbot, [[0, 5, 5], [0, 5, 55]])
    assert "DICOM header" in asked[0] and "0.3 mm per pixel" in asked[0]
    assert review.session.project.scan(sid).spacing_mm == (0.3, 0.3)  # kept
    assert "kept" in review.status_label.text()
    draw(review, qtbot, [[0, 5, 5], [0, 5, 55]])
    assert review.session.project.scan(sid).spacing_mm == pytest.approx((0.2, 0.2))
