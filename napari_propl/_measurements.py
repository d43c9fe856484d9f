"""The Review dock's measurements of the frame on screen: area, fitted-ellipse axes and
circumference (:func:`propl.measure.measure_mask`, the same numbers the export's CSV holds),
in millimetres when the scan's pixel spacing is known, else in pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QWidget

from propl.measure import measure_mask

#: What the fitted ellipse's circumference is called for a task (sonographers' words).
CIRCUMFERENCE_NAMES = {"fetal_head": "head circumference"}
TOOLTIP = (
    "the largest region of the mask on the frame on screen: its area, and the ellipse with "
    "the same spread: its axes and circumference (as in the exported CSV)"
)
UPDATE_MS = 120  # a brush stroke or the frame slider: measured once they pause


def measurement_text(mask2d: np.ndarray, spacing_mm: tuple[float, float] | None, task: str) -> str:
    """One line on one mask frame, e.g. ``area 812 mm² · axes 38.0 × 27.4 mm · head
    circumference 103.5 mm``."""
    m = measure_mask(np.asarray(mask2d) != 0, spacing_mm)
    if m["major_axis"] is None:
        return "no mask on this frame"
    unit = m["unit"]
    digits = 1 if unit == "mm" and m["area"] < 100 else 0
    area = f"{m['area']:,.{digits}f} {'mm²' if unit == 'mm' else 'pixels'}"
    circumference = CIRCUMFERENCE_NAMES.get(task, "circumference")
    text = (
        f"area {area} · axes {m['major_axis']:.1f} × {m['minor_axis']:.1f} {unit} · "
        f"{circumference} {m['circumference']:.1f} {unit}"
    )
    if unit == "px":
        text += " (in pixels: the scan has no pixel spacing)"
    return text


class MeasurementLabel(QLabel):
    """Measures the mask layer's frame on screen, a moment after it or the frame changes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.setWordWrap(True)
        self.setToolTip(TOOLTIP)
        self._source: tuple[Any, Any, tuple[float, float] | None, str] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.update_now)

    def follow(
        self, viewer: Any, labels: Any, spacing_mm: tuple[float, float] | None, task: str
    ) -> None:
        """Measure ``labels`` (a (F, H, W) mask layer) at the viewer's frame from now on."""
        self._source = (viewer, labels, spacing_mm, task)
        self.update_now()

    def clear_source(self) -> None:
        self._source = None
        self.setText("")

    def schedule(self, *_: Any) -> None:
        try:
            if self._source is not None:
                self._timer.start(UPDATE_MS)
        except RuntimeError:  # the dock was closed; the viewer's frame events still come
            pass

    def update_now(self) -> None:
        self._timer.stop()
        if self._source is None:
            return
        viewer, labels, spacing, task = self._source
        data = labels.data
        frame = min(int(viewer.dims.current_step[0]), len(data) - 1) if data.ndim == 3 else None
        mask = data[frame] if frame is not None else data
        self.setText(measurement_text(np.asarray(mask), spacing, task))
        if frame is not None and len(data) > 1:  # the slider says which: no room spent here
            self.setToolTip(f"frame {frame}: {TOOLTIP}")
