"""Driving napari as a user would, for the walkthrough scripts: run the event loop, wait for a
condition, find a menu entry, find a docked plugin widget."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import napari


def new_viewer() -> Any:
    """A napari window at 1600x1000, the size the docs' screenshots and layout checks use."""
    viewer = napari.Viewer(show=True, title="napari")
    viewer.window.resize(1600, 1000)
    pump()
    return viewer


def pump(seconds: float = 0.5) -> None:
    """Let Qt run for ``seconds`` (paint, signals, workers' results)."""
    app = napari.qt.get_qapp()
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def wait(until: Callable[[], Any], timeout: float = 600.0, what: str = "") -> None:
    """Run the event loop until ``until()`` is true (TimeoutError after ``timeout`` s)."""
    t0 = time.time()
    while not until():
        if time.time() - t0 > timeout:
            raise TimeoutError(what or until)
        pump(0.05)


def menu_action(viewer: Any, *path: str) -> Any:
    """The QAction at menu ``path`` (texts without '&'), as a user would click it."""
    actions = viewer.window._qt_window.menuBar().actions()
    for i, text in enumerate(path):
        found = next(
            (a for a in actions if a.text().replace("&", "").startswith(text)),
            None,
        )
        if found is None:
            names = [a.text() for a in actions]
            raise LookupError(f"no menu entry {text!r} in {names}")
        if i == len(path) - 1:
            return found
        found.menu().aboutToShow.emit()  # napari fills some submenus when they open
        actions = found.menu().actions()
    raise LookupError(path)


def dock(viewer: Any, title: str) -> Any:
    """The plugin widget docked under ``title``."""
    return next(w for k, w in viewer.window.dock_widgets.items() if k.startswith(title))


def dock_frame(viewer: Any, title: str) -> Any:
    """The dock (the QDockWidget with its title bar and tab) holding ``title``'s widget."""
    from qtpy.QtWidgets import QDockWidget

    frame = dock(viewer, title)
    while frame is not None and not isinstance(frame, QDockWidget):
        frame = frame.parent()
    if frame is None:
        raise LookupError(f"no dock holds {title!r}")
    return frame
