"""The plugin's manifest loads and its widgets open in a real viewer (Xvfb via pytest-xvfb)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

import npe2  # noqa: E402
from qtpy.QtWidgets import QWidget  # noqa: E402

PLUGIN = "napari-propl"


def test_manifest_is_discovered() -> None:
    pm = npe2.PluginManager()
    pm.discover(include_npe1=False)
    manifest = pm.get_manifest(PLUGIN)
    assert manifest.display_name == "ProPL ultrasound segmentation"
    contributions = manifest.contributions
    widget_names = [widget.display_name for widget in contributions.widgets or []]
    assert {"Segment (ProPL)", "Review (ProPL)"} <= set(widget_names)
    assert any("*.dcm" in r.filename_patterns for r in contributions.readers or [])
    assert "echo_cine" in [s.key for s in contributions.sample_data or []]


@pytest.mark.parametrize(
    ("name", "object_name"),
    [("Segment (ProPL)", "QtProplSegmentWidget"), ("Review (ProPL)", "QtProplReviewWidget")],
)
def test_widgets_open(make_napari_viewer, qtbot, name, object_name) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert isinstance(widget, QWidget)
    assert widget.objectName() == object_name


def test_segment_widget_without_a_model_offers_the_builtin_tasks(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (ProPL)")
    widget.model_edit.setText("")
    widget._refresh_tasks()
    tasks = [widget.task_combo.itemText(i) for i in range(widget.task_combo.count())]
    assert "thyroid_nodule" in tasks and "fetal_head" in tasks
