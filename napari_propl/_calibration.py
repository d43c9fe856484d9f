"""Calibrate a scan on a known distance: the user draws a line along something whose length
they know (the depth scale's ticks, a caliper), types that length in mm, and the scan gets
an isotropic pixel spacing: the measurements line and the export give millimetres from then on.

A project scan under review keeps the spacing in the project (:meth:`propl.store.Project.
set_spacing`); any other image layer in its metadata (``propl_spacing_mm``, which "Add open
images" takes into a project) and its scale. A spacing the scan already has (a DICOM's) is
replaced only once the user agrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QInputDialog, QMessageBox, QWidget

from . import _layers

if TYPE_CHECKING:
    from ._review import ReviewWidget

LAYER_NAME = "calibration line"
LINE_COLOUR = "#00e5ff"
HINT = "draw a line along a distance you know (e.g. 10 mm of the depth scale)"


def mm_per_pixel(line: np.ndarray, length_mm: float) -> float:
    """Millimetres per pixel when ``line`` (its vertices, ``(N, D)`` in pixels, the last two
    axes the image's rows and columns) is ``length_mm`` long; a path counts all its segments.

    Raises:
        ValueError: the length is not a positive number, or the line is under a pixel long.
    """
    if not (math.isfinite(length_mm) and length_mm > 0):
        raise ValueError(f"the length must be a positive number of mm, not {length_mm}")
    points = np.asarray(line, dtype=float)[:, -2:]
    pixels = float(np.hypot(*np.diff(points, axis=0).T).sum()) if len(points) > 1 else 0.0
    if pixels < 1.0:
        raise ValueError("the line is shorter than a pixel: draw it along the known distance")
    return length_mm / pixels


def spacing_text(spacing_mm: tuple[float, float]) -> str:
    row, col = spacing_mm
    same = math.isclose(row, col, rel_tol=1e-6)
    return f"{row:.4g} mm per pixel" if same else f"{row:.4g} × {col:.4g} mm per pixel"


@dataclass
class Target:
    """What a calibration applies to: the image layer, and its project scan if it has one."""

    image: Any
    scan_id: str | None
    spacing_mm: tuple[float, float] | None
    origin: str  # where the spacing it has came from, for the warning


def ask_length(parent: QWidget) -> float | None:
    """The line's length in mm, from the user (None: cancelled)."""
    value, ok = QInputDialog.getDouble(
        parent, "Calibrate", "Length of the line you drew, in mm:", 10.0, 0.001, 10_000.0, 2
    )
    return float(value) if ok else None


def confirm_override(parent: QWidget, text: str) -> bool:
    """Whether to replace a spacing the scan already has."""
    answer = QMessageBox.warning(
        parent, "Replace the pixel spacing?", text, QMessageBox.Yes | QMessageBox.Cancel
    )
    return answer == QMessageBox.Yes


class CalibrationTool(QObject):
    """The Review dock's "Calibrate…": a line layer to draw on, then the length, then the
    spacing set on the scan under review (or the selected image layer)."""

    def __init__(self, review: ReviewWidget) -> None:
        super().__init__(review)
        self.review = review
        self.target: Target | None = None
        self.layer: Any = None

    @property
    def viewer(self) -> Any:
        return self.review.viewer

    def start(self) -> Any:
        """Add the line layer over the scan (returns it; None: no image to calibrate)."""
        target = self.find_target()
        if target is None:
            show_error("open an image (or a scan of the project) to calibrate first")
            return None
        self.stop()
        self.target = target
        image = target.image
        self.layer = self.viewer.add_shapes(
            ndim=min(image.ndim, 3),
            name=LAYER_NAME,
            scale=tuple(image.scale)[: min(image.ndim, 3)],
            edge_color=LINE_COLOUR,
            edge_width=2,
        )
        self.layer.mode = "add_line"
        self.layer.events.data.connect(self._on_data)
        self.review.status_label.setText(f"calibrate {image.name}: {HINT}")
        return self.layer

    def stop(self) -> None:
        """Remove the line layer (calibrated, cancelled, or another one started)."""
        layer, self.layer = self.layer, None
        if layer is not None:
            layer.events.data.disconnect(self._on_data)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def find_target(self) -> Target | None:
        """The scan under review, else the selected image layer, else the only image shown."""
        from napari.layers import Image

        review = self.review
        images = [lyr for lyr in self.viewer.layers if isinstance(lyr, Image)]
        if review.scan_id is not None and review.core.project is not None:
            shown = [lyr for lyr in images if lyr.metadata.get("propl_review") == "image"]
            scan = review.core.project.scan(review.scan_id)
            if shown:
                origin = "from its DICOM header" if scan.modality else "set before"
                return Target(shown[0], scan.id, scan.spacing_mm, origin)
        active = self.viewer.layers.selection.active
        candidates = [active] if isinstance(active, Image) else []
        candidates += [lyr for lyr in images if lyr.visible and _layers.role_of(lyr) is None]
        if not candidates:
            return None
        image = candidates[0]
        spacing = image.metadata.get("propl_spacing_mm")
        source = str(image.metadata.get("propl_source") or "")
        dicom = source.lower().endswith((".dcm", ".dicom")) or "propl_region" in image.metadata
        origin = "from its DICOM header" if dicom else "set before"
        return Target(image, None, tuple(spacing) if spacing else None, origin)

    def _on_data(self, event: Any) -> None:
        if str(getattr(event, "action", "added")) != "added" or not len(self.layer.data):
            return
        line = np.asarray(self.layer.data[-1])
        QTimer.singleShot(0, lambda: self.finish(line))  # after napari's own drawing code

    def finish(self, line: np.ndarray) -> bool:
        """Ask the line's length and set the spacing; True when it was set."""
        target = self.target
        if target is None:
            return False
        length = ask_length(self.review)
        if length is None:
            self.stop()
            self.review.status_label.setText("calibration cancelled")
            return False
        try:
            size = mm_per_pixel(line, length)
        except ValueError as exc:
            show_error(str(exc))
            return False  # the layer stays: draw again
        return self.apply(target, (size, size), length)

    def apply(self, target: Target, spacing: tuple[float, float], length: float) -> bool:
        """Set ``spacing`` on the target (after the user agreed to replace one it had)."""
        if target.spacing_mm is not None:
            text = (
                f"{target.image.name} has a pixel spacing of {spacing_text(target.spacing_mm)} "
                f"({target.origin}). Replace it with {spacing_text(spacing)} from your "
                f"{length:g} mm line?"
            )
            if not confirm_override(self.review, text):
                self.stop()
                self.review.status_label.setText("calibration cancelled: the spacing is kept")
                return False
        if target.scan_id is not None:
            try:
                self.review.core.require_project().set_spacing(target.scan_id, spacing)
            except (ValueError, OSError) as exc:  # StoreError: read-only, damaged
                show_error(f"could not store the spacing: {exc}")
                return False
            self.review.spacing_changed(spacing)
        else:
            _set_layer_spacing(self.viewer, target.image, spacing)
        self.stop()
        self.review.status_label.setText(
            f"calibrated {target.image.name}: {spacing_text(spacing)} ({length:g} mm line)"
        )
        return True


def _set_layer_spacing(viewer: Any, image: Any, spacing: tuple[float, float]) -> None:
    """An image layer's spacing, and the scale of the layers segmented from it."""
    image.metadata["propl_spacing_mm"] = spacing
    made = [
        lyr
        for lyr in viewer.layers
        if _layers.role_of(lyr) and _made_from(lyr.name.partition(_layers.SEP)[2], image.name)
    ]
    for layer in [image, *made]:
        layer.scale = (*tuple(layer.scale)[:-2], *spacing)


def _made_from(base: str, image_name: str) -> bool:
    """Whether a layer named "ROLE · BASE" was segmented from ``image_name`` (BASE is the
    image's name, then its task in brackets)."""
    return base == image_name or base.startswith(f"{image_name} [")
