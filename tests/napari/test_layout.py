"""The plugin's three docks fit a 1600×1000 screen and leave the canvas room (Xvfb)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

WIDTH, HEIGHT = 1600, 1000
DOCKS = ("Segment (ProPL)", "Review (ProPL)", "Retrain (ProPL)")


def test_the_docks_fit_1600_by_1000(make_napari_viewer, qtbot) -> None:
    import numpy as np
    from qtpy.QtWidgets import QDockWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    # as in a session: a long layer name (the Segment image combo must not widen the dock)
    # and a mask selected (napari's Labels controls widen the left column to ~320 px)
    name = "apical 4-chamber echo, second visit (pydicom-data) [left_heart]"
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name=name)
    viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name=f"mask · {name}")
    window.resize(WIDTH, HEIGHT)
    for name in DOCKS:  # as Plugins > ProPL adds them (napari.yaml widgets)
        viewer.window.add_plugin_dock_widget("napari-propl", name)
    qtbot.wait(300)
    window.resize(WIDTH, HEIGHT)
    qtbot.wait(300)
    canvas = viewer.window._qt_viewer.canvas.native
    assert window.frameGeometry().height() <= HEIGHT, window.size()
    # the compact forms (Retrain's two columns, details in tooltips) keep the right dock
    # column under ~400 px
    assert canvas.width() >= 800, canvas.width()
    for name in DOCKS:  # every dock shows whole (nothing squeezed below its minimum)
        dock = viewer.window.dock_widgets[f"{name} (napari-propl)"]
        while not isinstance(dock, QDockWidget):  # the dock around the plugin's widget
            dock = dock.parent()
        assert dock.isVisible() and dock.height() >= dock.minimumSizeHint().height() - 1, name


def test_the_retrain_plot_legend_wraps_in_a_narrow_dock(qtbot) -> None:
    from napari_propl._retrain import CurvePlot

    plot = CurvePlot()
    qtbot.addWidget(plot)
    plot.reset(150)
    plot.add_loss(10, 0.512)
    plot.add_dice(10, 80.3)
    plot.baseline, plot.baseline_name = 74.2, "shipped"
    metrics = plot.fontMetrics()
    for width in (340, 600):
        places = plot._legend_places(width)
        ends = [
            x + metrics.horizontalAdvance(t)
            for (x, _), (_, t) in zip(places, plot.legend(), strict=True)
        ]
        assert len(places) == 3 and max(ends) <= width, (width, places)
    assert len({y for _, y in plot._legend_places(600)}) == 1  # one line where it fits
