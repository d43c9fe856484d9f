"""Click to fix, and Propagate: the Review widget's tools over :class:`ScanInteraction`.

With **Click to fix** on, the *clicks* layer is active: a click on the scan adds the clicked
structure to the mask, a right-click or Ctrl+click removes it, a drag draws a box around it;
the frame's mask is refined at once (in a worker: the frame is encoded once, each click runs
only the light head) and the mask layer's data is replaced in place, so the edit is autosaved
as a draft like a brush stroke (the brush still works and mixes with clicks: select the mask
layer). Ctrl+Z with the clicks layer active takes back the last click. **Propagate** carries
the frame on screen through the cine until the model is unsure; the frames it reached are
drafts until confirmed. The rules live in :mod:`propl.annotation.interaction`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from propl.uncertainty import OUTLINE_THRESHOLD

from . import _layers

if TYPE_CHECKING:
    from ._review import ReviewWidget

POSITIVE, NEGATIVE = "#33dd55", "#ff4040"
DRAG_PX = 3.0  # a press that moves farther than this (screen-scaled data pixels) is a box


class ClickTool(QObject):
    """The click tool and Propagate of one Review widget."""

    refined = Signal(object)  # (scan id, Refined), from the click thread
    undone = Signal(object)  # (scan id, frame, mask before the click or None)
    failed = Signal(str)

    def __init__(self, review: ReviewWidget) -> None:
        super().__init__(review)
        self.review = review
        self.viewer = review.viewer
        self.layer: Any = None
        self._interaction: Any = None
        self._scan: str | None = None
        self._latest: dict[int, np.ndarray] = {}  # a frame's mask from a click in flight
        self._clicker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propl-click")
        self._stop = threading.Event()
        self.propagating = False
        self.refined.connect(self._apply)
        self.undone.connect(self._apply_undo)
        self.failed.connect(show_error)

    # -- state of the open scan ----------------------------------------------------------

    def scan_changed(self) -> None:
        """Another scan is shown: its clicks start afresh (its frames are encoded on demand)."""
        self._interaction, self._scan, self._latest = None, self.review.scan_id, {}
        layer = self._existing_layer()
        if layer is not None:
            layer.data = np.zeros((0, 3))

    def interaction(self) -> Any:
        """The open scan's :class:`ScanInteraction` (made on first use: needs the model)."""
        from propl.annotation.interaction import ScanInteraction

        current = self.review.core.current
        if current is None:
            raise RuntimeError("no scan is shown for review")
        if self._interaction is None or self._scan != current.scan_id:
            predictor = self.review.core.predictor()
            # the same imaging region as the scan's prediction: clicks refine what it segmented
            region = getattr(current.scan, "region", None)
            self._interaction = ScanInteraction(predictor, current.image, current.task, region)
            self._scan, self._latest = current.scan_id, {}
        return self._interaction

    def provenance(self) -> dict[str, Any]:
        """What clicks and propagation did on the open scan ({} when nothing)."""
        if self._interaction is None or self._scan != self.review.scan_id:
            return {}
        prov: dict[str, Any] = self._interaction.provenance()
        return prov

    # -- the click tool --------------------------------------------------------------------

    def set_active(self, on: bool) -> None:
        """Switch the click tool on (the clicks layer active) or off (the mask layer)."""
        labels = self.review.labels_layer
        if labels is None:
            show_error("open a scan for review first")
            return
        if on:
            layer = self._clicks_layer(labels)
            layer.mode = "pan_zoom"
            self.viewer.layers.selection.active = layer
        else:
            self.viewer.layers.selection.active = labels

    def _existing_layer(self) -> Any:
        """The clicks layer when it is in the viewer (napari hands plugins proxies of layers,
        so it is found by its mark, not by identity)."""
        for layer in self.viewer.layers:
            if layer.metadata.get("propl_clicks"):
                self.layer = layer
                return layer
        self.layer = None
        return None

    def _clicks_layer(self, labels: Any) -> Any:
        existing = self._existing_layer()
        if existing is not None:
            return existing
        layer = self.viewer.add_points(
            np.zeros((0, 3)),
            ndim=3,
            name="clicks (left: add, right/Ctrl: remove, drag: box; Ctrl+Z: undo)",
            scale=labels.scale,
            size=8,
            face_color=POSITIVE,
            border_color="white",
        )
        layer.metadata["propl_clicks"] = True
        # a review layer: removed when another scan is shown (its clicks belong to this one),
        # never hidden with the other images
        layer.metadata["propl_review"] = "clicks"
        layer.mouse_drag_callbacks.append(self._on_press)
        layer.bind_key("Control-z", lambda _layer: self.undo(), overwrite=True)
        self.layer = layer
        return layer

    def _on_press(self, _layer: Any, event: Any) -> Any:
        labels = self.review.labels_layer
        if labels is None or self.review.scan_id is None:
            return
        start = np.asarray(labels.world_to_data(event.position), float)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        end = np.asarray(labels.world_to_data(event.position), float)
        frame = int(round(start[0])) if labels.ndim == 3 else 0
        (y0, x0), (y1, x1) = start[-2:], end[-2:]
        if moved and max(abs(y1 - y0), abs(x1 - x0)) > DRAG_PX:
            box = (min(y0, y1), min(x0, x1), max(y0, y1) + 1, max(x0, x1) + 1)
            self.submit(frame, box=box)
            return
        negative = event.button == 2 or "Control" in event.modifiers
        self.submit(frame, y=float(y1), x=float(x1), positive=not negative)

    def submit(
        self,
        frame: int,
        y: float | None = None,
        x: float | None = None,
        positive: bool = True,
        box: tuple[float, float, float, float] | None = None,
    ) -> Any:
        """Refine ``frame`` with a click at (y, x) and/or a box, in the click thread; the
        mask layer is updated when it is done. Returns the future."""
        from propl.interactive import Click

        labels, scan_id = self.review.labels_layer, self.review.scan_id
        if labels is None or scan_id is None:
            show_error("open a scan for review first")
            return None
        try:
            interaction = self.interaction()
        except Exception as exc:  # no model, or one without the head: said in one line
            show_error(f"click to fix: {exc}")
            return None
        mask = np.array(labels.data[frame], np.uint8)
        click = None if y is None or x is None else Click(y, x, positive)

        def work() -> None:
            try:
                start = self._latest.get(frame, mask)
                refined = interaction.click(frame, start, click, box)
                self._latest[frame] = refined.mask
            except Exception as exc:
                self.failed.emit(f"click to fix: {exc}")
                return
            self.refined.emit((scan_id, refined))

        return self._clicker.submit(work)

    def _apply(self, item: tuple[str, Any]) -> None:
        scan_id, refined = item
        if scan_id != self.review.scan_id or self.review.labels_layer is None:
            return  # the scan changed meanwhile
        if self._latest.get(refined.frame) is refined.mask:
            del self._latest[refined.frame]
        self._set_frame(refined.frame, refined.mask, refined.uncertainty)
        self._show_clicks()

    def _set_frame(self, frame: int, mask: np.ndarray, uncertainty: np.ndarray | None) -> None:
        """Replace one frame of the mask (the autosave stores it as a draft) and, when given,
        of the uncertainty map and its outline, so the outline follows the edited mask."""
        labels = self.review.labels_layer
        labels.data[frame] = mask
        labels.refresh()  # emits set_data: the autosave takes it from here
        if uncertainty is None:
            return
        for layer in self.viewer.layers:
            role = layer.metadata.get("propl_review")
            if role in ("uncertainty", "low") and layer.data.shape != labels.data.shape:
                continue  # still the previous scan's (its update comes a turn later)
            if role == "uncertainty":
                layer.data[frame] = uncertainty.astype(layer.data.dtype)
                layer.refresh()
            elif role == "low":
                layer.data[frame] = _layers.low_confidence(uncertainty, OUTLINE_THRESHOLD)
                layer.refresh()

    def _show_clicks(self) -> None:
        if self._existing_layer() is None or self._interaction is None:
            return
        points, colours = [], []
        for f in range(len(self.review.labels_layer.data)):
            for c in self._interaction.clicks(f):
                points.append((f, c.y, c.x))
                colours.append(POSITIVE if c.positive else NEGATIVE)
        self.layer.data = np.array(points, float).reshape(-1, 3)
        if colours:
            self.layer.refresh()  # slice the new points first: colours are drawn from the view
            self.layer.face_color = colours

    def undo(self) -> Any:
        """Take back the last click on the frame on screen (in the click thread, after the
        clicks in flight; the GUI never waits for them). Returns the future."""
        if self._interaction is None or self.review.labels_layer is None:
            return None
        frame, interaction = int(self.viewer.dims.current_step[0]), self._interaction
        scan_id = self.review.scan_id

        def work() -> None:
            self.undone.emit((scan_id, frame, interaction.undo(frame)))

        return self._clicker.submit(work)

    def _apply_undo(self, item: tuple[str, int, np.ndarray | None]) -> None:
        scan_id, frame, before = item
        if scan_id != self.review.scan_id or self.review.labels_layer is None:
            return
        if before is None:
            show_info("no click to take back on this frame")
            return
        self._latest.pop(frame, None)
        self._set_frame(frame, before, None)
        self._show_clicks()

    def wait(self) -> None:
        """Block until every click made so far is refined (tests)."""
        self._clicker.submit(lambda: None).result()

    # -- propagation -----------------------------------------------------------------------

    def propagate(self) -> Any:
        """Propagate the frame on screen through the cine in a worker (a second call
        cancels); returns the worker."""
        if self.propagating:
            self._stop.set()
            return None
        labels = self.review.labels_layer
        if labels is None or self.review.scan_id is None or len(labels.data) < 2:
            show_error("propagation needs a cine open for review")
            return None
        try:
            interaction = self.interaction()
        except Exception as exc:
            show_error(f"propagate: {exc}")
            return None
        frame = int(self.viewer.dims.current_step[0])
        masks, scan_id = np.array(labels.data, np.uint8), self.review.scan_id
        self._stop.clear()

        def work() -> Any:
            done = [0]

            def progress(n: int, total: int) -> None:
                done[0] = n

            result = interaction.propagate(
                masks, frame, should_stop=self._stop.is_set, progress=progress
            )
            return scan_id, frame, result

        worker = create_worker(work, _progress={"desc": "propagating"}, _ignore_errors=True)
        worker.returned.connect(self._on_propagated)
        worker.errored.connect(lambda exc: show_error(f"propagation failed: {exc}"))
        worker.finished.connect(self._propagation_done)
        self.propagating = True
        self.review.buttons["propagate"].setText("Cancel propagation")
        worker.start()
        return worker

    def _propagation_done(self) -> None:
        self.propagating = False
        self.review.buttons["propagate"].setText("Propagate through the cine")

    def _on_propagated(self, item: tuple[str, int, Any]) -> None:
        scan_id, frame, result = item
        labels = self.review.labels_layer
        if scan_id != self.review.scan_id or labels is None:
            return
        for f in result.reached:
            labels.data[f] = result.masks[f]
        labels.refresh()  # the autosave stores the reached frames as drafts
        text = f"propagated from frame {frame} to {len(result.reached)} frames (drafts)"
        stops = {d: f for d, f in result.stopped_at.items() if f is not None}
        if stops:
            where = ", ".join(f"{d} at frame {f}" for d, f in stops.items())
            text += f"; stopped {where}: unsure there, fix it and propagate again"
            self.viewer.dims.set_current_step(0, next(iter(stops.values())))
        self.review.status_label.setText(text)
