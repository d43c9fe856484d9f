"""The Review dock explains itself: keys for its buttons (none of napari's), a legend."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from qtpy.QtGui import QKeySequence  # noqa: E402

from napari_propl._review import SHORTCUTS, shortcut_text  # noqa: E402

PLUGIN = "napari-propl"


def left_heart_project(path, scans) -> list[str]:
    """A project of flat scans ``(name, shape, confidence)`` (shape ``(F, H, W)``, or
    ``(F, H, W, 3)`` for colour), each predicted for left_heart with a square mask."""
    import numpy as np

    from propl.store import Project

    with Project.create(path) as p:
        ids = []
        for name, shape, conf in scans:
            sid = p.add_scan(np.full(shape, 60, np.uint8), name)
            frames = shape[:3]
            mask = np.zeros(frames, np.uint8)
            mask[:, 5:15, 5:15] = 1
            p.save_prediction(
                sid, "left_heart", mask, np.zeros(frames), np.full(shape[0], conf), "v1"
            )
            ids.append(sid)
    return ids


def napari_keys(viewer) -> set[str]:
    """Every key napari binds: the viewer's and layers' actions, and its menus'."""
    from napari._app_model import get_app_model
    from napari.utils.shortcuts import default_shortcuts

    keys = {str(kb) for bindings in default_shortcuts.values() for kb in bindings}
    keys |= {str(kb.keybinding) for kb in get_app_model().keybindings}
    return {QKeySequence(k).toString() for k in keys}


def test_review_keys_collide_with_none_of_napari_and_show_in_tooltips(make_napari_viewer):
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    ours = {QKeySequence(k).toString() for k in SHORTCUTS.values()}
    assert len(ours) == len(SHORTCUTS) == 5
    assert not ours & napari_keys(viewer)
    for key, keys in SHORTCUTS.items():
        assert review.shortcuts[key].key() == QKeySequence(keys)
        assert shortcut_text(keys) in review.buttons[key].toolTip()
    assert shortcut_text("Ctrl+Return").endswith("Enter")


def test_review_keys_press_their_buttons(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    calls: list[tuple] = []
    monkeypatch.setattr(review, "step", lambda delta: calls.append(("step", delta)))
    monkeypatch.setattr(review, "confirm", lambda advance: calls.append(("confirm", advance)))
    monkeypatch.setattr(review, "save", lambda status, advance: calls.append((status, advance)))
    for key in ("next", "previous", "accept", "reject", "skip"):
        review.shortcuts[key].activated.emit()
    assert calls == [
        ("step", 1),
        ("step", -1),
        ("confirm", True),
        ("rejected", True),
        ("skipped", True),
    ]


def test_legend_says_what_the_colours_mean(make_napari_viewer):
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    text = review.legend.text()
    assert "yellow outline" in text and "unsure" in text and "glow" in text
    assert "mask" in review.legend.toolTip()  # the details, where they take no room
    assert review.legend.wordWrap()  # never widens the dock


def test_a_still_after_a_cine_is_shown_at_frame_zero(make_napari_viewer, qtbot, tmp_path):
    """The frame slider stays where a cine left it while an opened cine (hidden) keeps the
    range: a still shown for review then had nothing on screen."""
    import numpy as np

    ids = left_heart_project(
        tmp_path / "p.zarr", (("cine", (6, 20, 24), 0.5), ("still", (1, 20, 24), 0.6))
    )
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((30, 20, 24), np.uint8), name="opened cine")
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(tmp_path / "p.zarr")
    review.task_combo.setCurrentText("left_heart")
    qtbot.waitUntil(lambda: review.queue_list.count() == 2, timeout=30_000)
    review.load(ids[0])
    qtbot.waitUntil(lambda: review.scan_id == ids[0], timeout=30_000)
    viewer.dims.set_current_step(0, 14)
    review.load(ids[1])
    qtbot.waitUntil(lambda: review.scan_id == ids[1], timeout=30_000)
    assert viewer.dims.current_step[0] == 0
    assert review.measurements.text().startswith("area ")


def test_measurement_text_names_the_units_and_the_head_circumference():
    import numpy as np

    from napari_propl._measurements import measurement_text
    from propl.measure import measure_mask

    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 10:50] = 1
    m = measure_mask(mask, (0.1, 0.1))
    assert m["area"] == pytest.approx(8.0)
    assert measurement_text(mask, (0.5, 0.5), "fetal_head").startswith("area 200 mm²")
    text = measurement_text(mask, (0.1, 0.1), "fetal_head")
    assert text.startswith(f"area {m['area']:.1f} mm² · axes {m['major_axis']:.1f} × ")
    assert f"head circumference {m['circumference']:.1f} mm" in text
    px = measurement_text(mask, None, "thyroid_nodule")
    assert "800 pixels" in px and "· circumference" in px and "no pixel spacing" in px
    assert measurement_text(np.zeros((4, 4), np.uint8), None, "x") == "no mask on this frame"


def test_review_dock_measures_the_frame_on_screen(make_napari_viewer, qtbot, tmp_path):
    import numpy as np

    from propl.store import Project

    shape = (3, 40, 60)
    with Project.create(tmp_path / "p.zarr") as p:
        sid = p.add_scan(np.full(shape, 60, np.uint8), "head", spacing_mm=(0.2, 0.2))
        mask = np.zeros(shape, np.uint8)
        mask[:, 10:30, 10:50] = 1
        mask[2] = 0
        p.save_prediction(sid, "fetal_head", mask, np.zeros(shape), np.full(3, 0.7), "v1")
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(tmp_path / "p.zarr")
    review.task_combo.setCurrentText("fetal_head")
    qtbot.waitUntil(lambda: review.queue_list.count() == 1, timeout=30_000)
    review.load(sid)
    qtbot.waitUntil(lambda: review.scan_id == sid, timeout=30_000)
    viewer.dims.set_current_step(0, 0)
    text = lambda: review.measurements.text()  # noqa: E731
    qtbot.waitUntil(lambda: review.measurements.toolTip().startswith("frame 0: "), timeout=5_000)
    assert text().startswith("area 32.0 mm²") and "head circumference" in text()
    viewer.dims.set_current_step(0, 2)
    qtbot.waitUntil(lambda: text() == "no mask on this frame", timeout=5_000)
    review.labels_layer.paint((2, 20, 20), 1)  # a brush dab: measured when it pauses
    qtbot.waitUntil(lambda: text().startswith("area "), timeout=5_000)


def test_the_mask_stays_above_the_scan_when_a_colour_cine_follows_a_grey_still(
    make_napari_viewer, qtbot, tmp_path
):
    """A scan of another kind (colour after grey, cine after still) gets its layers made anew,
    and a new layer lands on top: the opaque scan hid the mask, the outline and the glow."""

    ids = left_heart_project(
        tmp_path / "p.zarr", (("still", (1, 20, 24), 0.5), ("cine", (4, 20, 24, 3), 0.6))
    )
    viewer = make_napari_viewer()
    review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review (ProPL)")[1]
    review.open_project(tmp_path / "p.zarr")
    review.task_combo.setCurrentText("left_heart")
    qtbot.waitUntil(lambda: review.queue_list.count() == 2, timeout=30_000)
    for sid in ids:
        review.load(sid)
        qtbot.waitUntil(lambda sid=sid: review.scan_id == sid, timeout=30_000)
        order = [layer.metadata.get("propl_review") for layer in viewer.layers]
        assert order.index("image") < order.index("uncertainty") < order.index("low")
        assert order.index("low") < order.index("mask"), order
    assert viewer.layers[-1].metadata["propl_review"] == "mask"
    assert viewer.layers[0].metadata["propl_review"] == "image" and viewer.layers[0].rgb
