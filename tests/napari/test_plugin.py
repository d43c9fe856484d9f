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
    widget_names = [widget.display_name for widget in manifest.contributions.widgets or []]
    assert "Segment (ProPL)" in widget_names


def test_segment_widget_opens(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (ProPL)")
    assert isinstance(widget, QWidget)
    assert widget.objectName() == "QtProplSegmentWidget"
    assert "Available tasks" in widget.tasks_label.text()
