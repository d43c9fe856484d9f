"""The "Review (ProPL)" dock widget: a project, a queue (least confident first), accept/correct.

Every change of the review Labels layer (paint, fill, erase, undo, redo, data replaced) is
saved as a **draft** (debounced, in a worker), and again before another scan is shown or
napari closes: nothing the annotator did is lost, but a draft never trains a model. A mask
becomes a label only when the annotator confirms it: **Accept** (and go to the next scan) or
**Save correction** (stay). On a cine these confirm the frame on screen and every frame edited
since it was last confirmed (**Accept all frames** confirms the whole cine); the other frames
stay unlabelled. Reject and skip are saved at once. The store does the crash safety; the
rules (what a save means, how the queue advances) live in the core session,
:class:`propl.annotation.AnnotationSession` (``self.session.core``): this widget shows its
scans and hands it the annotator's edits.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QShortcut,
    QVBoxLayout,
    QWidget,
)

from propl.annotation import BURNED_IN, AnnotationSession, next_after_save, step_in_queue
from propl.store.review_state import describe
from propl.tasks import task_colour
from propl.uncertainty import OUTLINE_THRESHOLD

from . import _layers
from ._calibration import CalibrationTool
from ._clicks import ClickTool
from ._compact import compact_combo
from ._measurements import MeasurementLabel
from ._session import Session, SessionMember, tab_with

if TYPE_CHECKING:
    import napari

AUTOSAVE_MS = 800
#: Keys of the review buttons, application-wide (the canvas may have the focus). None of them
#: is one of napari's (viewer, layers, menus): its own keys are single letters, arrows,
#: Ctrl+Up/Down and a few Ctrl/Alt letters; a text field keeps Ctrl+Left/Right for words.
SHORTCUTS = {
    "accept": "Ctrl+Return",
    "next": "Ctrl+Right",
    "previous": "Ctrl+Left",
    "reject": "Ctrl+Shift+R",
    "skip": "Ctrl+Shift+K",
}
TOOLTIPS = {
    "previous": "the scan before this one in the queue",
    "next": "the next scan in the queue (nothing is confirmed; your edits stay as a draft)",
    "accept": "confirm the mask as a label (on a cine: this frame and the frames you "
    "edited), then the next scan",
    "save": "confirm the mask as a label (on a cine: this frame and the frames you edited), "
    "and stay on this scan",
    "accept_all": "confirm every frame of the cine as a label, then the next scan",
    "reject": "the scan is unusable (say why below); it never trains a model",
    "skip": "leave the scan for later (say why below)",
}


class ReviewWidget(SessionMember, QWidget):
    """Open a project, walk its review queue, accept or correct each scan."""

    saved = Signal(object, bool)  # (Review, advance), emitted from the save thread
    save_failed = Signal(str)
    _keep_task = ""  # while a project is being created: the task it starts at

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("QtProplReviewWidget")
        self.labels_layer: Any = None
        self._shown_shape: tuple[int, ...] | None = None
        self._queue_reads = 0  # queue reads started: only the latest one is shown
        self._queue_shown = 0  # the read the list shows
        self._advance_from: str | None = None  # after a save: open the next scan once listed
        # one save thread: saves reach the store in the order they were made
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propl-save")
        self.saved.connect(self._on_saved)
        self.clicks = ClickTool(self)
        self.calibration = CalibrationTool(self)
        self.save_failed.connect(show_error)
        self._build()

    # -- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.project_label = QLabel("no project open")
        self.project_label.setWordWrap(True)
        new, open_, imp, add = (
            QPushButton(t) for t in ("New…", "Open…", "Import files…", "Add open images")
        )
        new.clicked.connect(self._new_dialog)
        open_.clicked.connect(self._open_dialog)
        imp.clicked.connect(self._import_dialog)
        add.clicked.connect(self.add_open_images)
        self.task_combo = compact_combo()
        self.task_combo.currentTextChanged.connect(lambda _t: self._on_task_changed())
        self.new_task_button = QPushButton("New task…")
        self.new_task_button.setToolTip("add a task (name, organ, target, colour) to the project")
        self.new_task_button.clicked.connect(self._new_task_dialog)
        self.keep_phi = QCheckBox("keep patient data")
        self.keep_phi.setToolTip(
            "Off (default): imported DICOM headers are de-identified (no names, IDs, dates) "
            "and the files' paths are not stored"
        )
        self.unreviewed_only = QCheckBox("unreviewed only")
        self.unreviewed_only.setChecked(True)
        self.unreviewed_only.toggled.connect(lambda _c: self.refresh_queue())
        self.queue_list = QListWidget()
        self.queue_list.setToolTip(
            "least confident first; confidence: the Dice the model expects its mask to score "
            "(1 = sure; the mean over a cine's frames)"
        )
        self.queue_list.itemActivated.connect(lambda item: self.load(item.data(Qt.UserRole)))
        # long names wrap: no sideways scrolling in a narrow dock
        self.queue_list.setWordWrap(True)
        self.queue_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        # the list gives way first when the dock is short (three rows), not the buttons
        self.queue_list.setMinimumHeight(3 * self.queue_list.fontMetrics().height() + 8)
        self.progress_label = QLabel("")
        self.measurements = MeasurementLabel()
        self.viewer.dims.events.current_step.connect(self.measurements.schedule)
        self.calibrate_button = QPushButton("Calibrate…")
        self.calibrate_button.setToolTip(
            "give the scan a pixel spacing (for measurements in mm): draw a line along a "
            "distance you know, then type its length; on the scan under review, else the "
            "selected image"
        )
        self.calibrate_button.clicked.connect(self.calibration.start)
        self.legend = _legend()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)  # a long status must not widen the dock
        self.reason_edit = QLineEdit()
        self.reason_edit.setPlaceholderText("reason (for reject / skip)")
        buttons = {
            "previous": ("◀ Previous", lambda: self.step(-1)),
            "next": ("Next ▶", lambda: self.step(1)),
            "accept": ("Accept", self.accept),
            "save": ("Save correction", lambda: self.confirm(advance=False)),
            "accept_all": ("Accept all frames", lambda: self.confirm(advance=True, whole=True)),
            "reject": ("Reject", lambda: self.save("rejected", advance=True)),
            "skip": ("Skip", lambda: self.save("skipped", advance=True)),
            "export": ("Export…", self._export_dialog),
            "click": ("Click to fix", self.clicks.set_active),
            "propagate": ("Propagate through the cine", lambda: self.clicks.propagate()),
        }
        self.buttons = {}
        grid = QGridLayout()
        for i, (key, (text, slot)) in enumerate(buttons.items()):
            b = QPushButton(text)
            b.clicked.connect(slot)
            self.buttons[key] = b
            grid.addWidget(b, i // 2, i % 2)
        self.buttons["click"].setCheckable(True)
        self.buttons["click"].setToolTip(
            "click on the scan: add (left), remove (right or Ctrl+click), drag a box; "
            "Ctrl+Z takes back the last click; the brush still works on the mask layer"
        )
        self.buttons["propagate"].setToolTip(
            "carry the frame on screen through the cine until the model is unsure; the "
            "frames reached are drafts until you confirm them"
        )
        self.shortcuts = {}
        for key, tip in TOOLTIPS.items():
            keys = SHORTCUTS.get(key)
            if keys is not None:
                shortcut = QShortcut(QKeySequence(keys), self)
                shortcut.setContext(Qt.ApplicationShortcut)
                shortcut.activated.connect(self.buttons[key].click)
                self.shortcuts[key] = shortcut
                tip += f" ({shortcut_text(keys)})"
            self.buttons[key].setToolTip(tip)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.timeout.connect(self.save_draft)

        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (new, open_, imp):
            row1.addWidget(b)
        row2.addWidget(add)
        row2.addWidget(self.keep_phi)
        layout = QVBoxLayout(self)
        # compact: each row earns its height (the dock shares a 1000 px screen)
        task_row, progress_row = QHBoxLayout(), QHBoxLayout()
        task_row.addWidget(QLabel("task"))
        task_row.addWidget(self.task_combo, 1)
        task_row.addWidget(self.new_task_button)
        progress_row.addWidget(self.progress_label, 1)
        progress_row.addWidget(self.unreviewed_only)
        for w in (self.project_label, row1, row2, task_row):
            layout.addLayout(w) if isinstance(w, QHBoxLayout) else layout.addWidget(w)
        layout.addWidget(self.queue_list, 1)
        layout.addLayout(progress_row)
        measure_row = QHBoxLayout()
        measure_row.addWidget(self.measurements, 1)
        measure_row.addWidget(self.calibrate_button, 0, Qt.AlignTop)
        layout.addLayout(measure_row)
        layout.addWidget(self.legend)
        layout.addLayout(grid)
        layout.addWidget(self.reason_edit)
        layout.addWidget(self.status_label)
        QTimer.singleShot(0, self._tab_with_retrain)

    @property
    def core(self) -> AnnotationSession:
        """The core session: the project, the open scan and the rules."""
        return self.session.core

    @property
    def scan_id(self) -> str | None:
        """The scan shown for review (None: none, or its layers are being swapped)."""
        current = self.core.current
        return current.scan_id if current is not None else None

    @property
    def scan_task(self) -> str | None:
        """The task the shown scan was loaded for (its saves go to this task)."""
        current = self.core.current
        return current.task if current is not None else None

    def _tab_with_retrain(self) -> None:
        """Opened after Retrain: a tab beside it (stacked, the window outgrows 1000 px)."""
        try:
            tab_with(self, "QtProplRetrainWidget")
        except RuntimeError:  # closed before the event loop came round
            pass

    def _connect_session(self, session: Session) -> None:
        session.project_changed.connect(self._on_project_changed)
        session.predictions_changed.connect(self._on_predictions_changed)
        session.tasks_changed.connect(self._on_tasks_changed)
        session.closing.connect(self._on_closing)

    # -- project ---------------------------------------------------------------------------

    def _new_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New project", "project.zarr")
        if path:
            self.open_project(path, create=True)

    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project (a .zarr folder)")
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path, create: bool = False) -> None:
        # a new project starts at the task already chosen (e.g. the one the Segment widget
        # found the opened scan looks like), an existing one at its first task
        self._keep_task = self.session.task if create else ""
        try:
            self.session.open_project(path, create=create)
        except (ValueError, RuntimeError, OSError) as exc:  # StoreError, StoreLockedError
            show_error(str(exc))
        finally:
            self._keep_task = ""

    def _on_project_changed(self) -> None:
        project = self.session.project
        self.labels_layer = None  # the core shows no scan of a new project
        self.measurements.clear_source()
        self.task_combo.blockSignals(True)
        self.task_combo.clear()
        if project is not None:
            self.project_label.setText(f"project: {project.root}")
            self.task_combo.addItems([t.id for t in project.tasks])
            if self.task_combo.findText(self._keep_task) >= 0:
                self.task_combo.setCurrentText(self._keep_task)
        else:
            self.project_label.setText("no project open")
        self.task_combo.blockSignals(False)
        self.session.set_task(self.task_combo.currentText())
        self.refresh_queue()

    def _new_task_dialog(self) -> None:
        from ._task_dialog import ask_new_task

        project = self.session.project
        if project is None:
            show_error("open or create a project first")
            return
        task = ask_new_task([t.id for t in project.tasks], self)
        if task is not None:
            self.add_task(task)

    def add_task(self, task: Any) -> None:
        """Add a task to the project and switch the queue to it."""
        try:
            self.session.add_task(task)
        except (ValueError, RuntimeError) as exc:
            show_error(str(exc))
            return
        self.task_combo.setCurrentText(task.id)
        show_info(f"task {task.id} added: label a few scans, then retrain")

    def _import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import scans")
        if files:
            self.import_files(files)

    def import_files(self, files: list[str]) -> Any:
        """Import scan files into the project in a worker (bad files are named and skipped)."""
        project = self.session.project
        if project is None:
            show_error("open or create a project first")
            return None
        keep_phi = self.keep_phi.isChecked()

        def work() -> Any:
            from propl.data.readers import ReaderError

            failed = []
            for i, f in enumerate(files):
                try:
                    scan_id = project.add_file(f, keep_phi=keep_phi, keep_source_path=keep_phi)
                except ReaderError as exc:
                    failed.append(str(exc))
                else:
                    if project.scan(scan_id).burned_in_annotation:
                        failed.append(f"{f}: {BURNED_IN}")
                yield i + 1
            return failed

        worker = create_worker(work, _progress={"total": len(files), "desc": "importing"})
        worker.returned.connect(self._on_imported)
        worker.start()
        return worker

    def _on_imported(self, failed: list[str]) -> None:
        for message in failed:
            show_error(message)
        self.refresh_queue()

    def add_open_images(self) -> Any:
        """Import the viewer's image layers into the project in a worker; each layer then
        remembers its scan id. Returns the worker (None when there is nothing to do)."""
        from napari.layers import Image

        project = self.session.project
        if project is None:
            show_error("open or create a project first")
            return None
        todo = [
            (
                layer.name,
                layer.data,
                layer.metadata.get("propl_source"),
                layer.metadata.get("propl_spacing_mm"),
            )
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and not layer.metadata.get("propl_scan_id")
            and not layer.metadata.get("propl_review")
            and _layers.role_of(layer) != "uncertainty"
        ]
        if not todo:
            show_info("every open image is already in the project")
            return None

        keep_phi = self.keep_phi.isChecked()

        def work() -> Any:
            added, failed = [], []
            for i, (name, data, source, spacing) in enumerate(todo):
                try:  # one bad layer is named and skipped; the others still go in
                    scan_id = project.add_scan(
                        np.asarray(data),
                        name,
                        source=source if keep_phi else None,  # a path can name the patient
                        spacing_mm=spacing,
                    )
                except (ValueError, TypeError, OSError, RuntimeError) as exc:
                    failed.append(f"could not add image layer '{name}': {exc}")
                else:
                    added.append((name, scan_id))
                yield i + 1
            return added, failed

        worker = create_worker(
            work, _progress={"total": len(todo), "desc": "adding images"}, _ignore_errors=True
        )
        worker.returned.connect(self._on_images_added)
        worker.errored.connect(lambda exc: show_error(f"could not add the images: {exc}"))
        worker.start()
        return worker

    def _on_images_added(self, result: tuple[list[tuple[str, str]], list[str]]) -> None:
        added, failed = result
        for name, scan_id in added:
            if name in self.viewer.layers:
                self.viewer.layers[name].metadata["propl_scan_id"] = scan_id
        for message in failed:
            show_error(message)
        if added:
            show_info(f"{len(added)} image(s) added to the project")
        self.refresh_queue()

    def _export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export masks and measurements to")
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> Any:
        """Export the reviewed masks of the chosen task in a worker (napari progress bar)."""
        from propl.project_export import iter_export

        project, task = self.session.project, self.task_combo.currentText()
        if project is None or not task:
            show_error("open a project and choose a task first")
            return None
        worker = create_worker(
            iter_export,
            project,
            task,
            folder,
            _progress={"desc": f"exporting {task}"},
            _ignore_errors=True,
        )
        worker.returned.connect(self._on_exported)
        worker.errored.connect(lambda exc: show_error(f"export failed: {exc}"))
        worker.start()
        return worker

    def _on_exported(self, report: Any) -> None:
        text = f"exported {len(report.written)} files and {report.csv}"
        self.status_label.setText(
            text + (f"; {len(report.skipped)} skipped" if report.skipped else "")
        )
        show_info(text)

    # -- queue -----------------------------------------------------------------------------

    def refresh_queue(self) -> Any:
        """Re-read the queue from the store in a worker (one read per scan: seconds for a
        large project), then list it; ``queue_pending`` is true until it is shown. A read
        overtaken by a newer one is dropped. Returns the worker (None: nothing to read)."""
        project, task = self.session.project, self.task_combo.currentText()
        self._queue_reads += 1
        if project is None or not task:
            self._queue_shown = self._queue_reads
            self.queue_list.clear()
            self.progress_label.setText("")
            return None
        include_reviewed = not self.unreviewed_only.isChecked()
        worker = create_worker(
            _read_queue,
            self.core,
            project,
            task,
            include_reviewed,
            self._queue_reads,
            _ignore_errors=True,
        )
        worker.returned.connect(self._show_queue)
        worker.errored.connect(self._on_queue_failed)
        worker.start()
        return worker

    def _on_queue_failed(self, exc: BaseException) -> None:
        self._queue_shown, self._advance_from = self._queue_reads, None
        show_error(f"could not read the review queue: {exc}")

    def _show_queue(self, read: dict[str, Any]) -> None:
        if read["read"] != self._queue_reads or self.session.project is not read["project"]:
            return  # a newer read is on its way, or the project changed
        self._queue_shown = read["read"]
        self.queue_list.clear()
        for q in read["items"]:
            conf = "not segmented" if q.confidence is None else f"confidence {q.confidence:.2f}"
            if q.status == "damaged":
                item = QListWidgetItem(f"{q.name}  ·  DAMAGED (propl check lists it)")
                item.setToolTip(q.detail)
            else:
                item = QListWidgetItem(f"{q.name}  ·  {conf}  ·  {q.detail or q.status}")
            item.setData(Qt.UserRole, q.scan_id)
            self.queue_list.addItem(item)
            if q.scan_id == self.scan_id:
                self.queue_list.setCurrentItem(item)
        done, total = read["progress"]
        self.progress_label.setText(f"reviewed {done} of {total}")
        current, self._advance_from = self._advance_from, None
        if current is not None:  # saved with "and next": the core's rule picks the scan
            following = next_after_save(self.queue_ids(), current)
            if following is not None:
                self.load(following)
            else:
                show_info("review queue done")

    def _on_tasks_changed(self) -> None:
        """A task was added: list it, keep the current choice (and the shown scan)."""
        project, current = self.session.project, self.task_combo.currentText()
        if project is None:
            return
        self.task_combo.blockSignals(True)
        self.task_combo.clear()
        self.task_combo.addItems([t.id for t in project.tasks])
        self.task_combo.setCurrentText(current)
        self.task_combo.blockSignals(False)

    def _on_task_changed(self) -> None:
        """Save a pending edit under the task it was made for, then show the same scan for
        the new task (its label or prediction), so nothing is saved under the wrong task."""
        self._flush()
        self.session.set_task(self.task_combo.currentText())
        self.refresh_queue()
        if self.scan_id is not None and self.task_combo.currentText():
            self.load(self.scan_id)

    def _on_predictions_changed(self) -> None:
        """New predictions (re-prediction after a new model): re-order the queue and show
        the new prediction of the open scan unless it is reviewed or being edited."""
        self.refresh_queue()
        scan_id = self.scan_id
        if scan_id is None or self._autosave_timer.isActive():
            return
        if self.core.shows_unreviewed():
            self.load(scan_id)

    @property
    def queue_pending(self) -> bool:
        """A queue read is under way: the list will change when it is shown."""
        return self._queue_shown != self._queue_reads

    def queue_ids(self) -> list[str]:
        return [self.queue_list.item(i).data(Qt.UserRole) for i in range(self.queue_list.count())]

    def step(self, delta: int) -> None:
        self._flush()
        target = step_in_queue(self.queue_ids(), self.scan_id, delta)
        if target is None:
            self.status_label.setText("the queue is empty")
            return
        self.load(target)

    # -- one scan --------------------------------------------------------------------------

    def load(self, scan_id: str) -> Any:
        """Show a scan with its current label (or prediction) for review.

        The scan is read from the store in a worker and shown when read (``scan_id`` changes
        then); returns the worker.
        """
        self._flush()
        project, task = self.session.project, self.task_combo.currentText()
        if project is None or not task:
            show_error("open a project and choose a task first")
            return None
        worker = create_worker(_read_for_review, self.core, scan_id, task, _ignore_errors=True)
        worker.returned.connect(self._show_scan)  # a bound slot: dropped if the widget goes
        worker.errored.connect(lambda exc: show_error(f"could not open scan {scan_id}: {exc}"))
        worker.start()
        return worker

    def _show_scan(self, read: dict[str, Any]) -> None:
        """Reuse the review layers of the previous scan (renamed, data replaced): replacing
        data is cheap, creating layers is not."""
        self._flush()
        view = read["view"]
        scan = view.scan
        wanted = {"image": read["image"].name, **read["names"]}
        for layer in list(self.viewer.layers):
            role = layer.metadata.get("propl_review")
            if role is None:
                continue
            if role in wanted and wanted[role] not in self.viewer.layers:
                layer.name = wanted[role]
            elif role not in wanted or layer.name != wanted[role]:
                self.viewer.layers.remove(layer)
        self.core.show(None)  # no autosave into the old scan while its layers change

        def done(shown: dict[str, Any]) -> None:
            for role, name in wanted.items():
                shown[name].metadata["propl_review"] = role
            # the scan under review alone: other scans (often of other sizes) would show
            # through or around it; their eye icons in the layer list bring them back
            for layer in self.viewer.layers:
                if "propl_review" not in layer.metadata and layer.visible:
                    layer.visible = False
            shown[wanted["image"]].metadata["propl_scan_id"] = view.scan_id
            # the scan at the bottom, the mask on top (a layer made anew lands on top)
            _layers.stack(self.viewer, [wanted[r] for r in ("image", "uncertainty", "low", "mask")])
            mask_layer = shown[wanted["mask"]]
            # napari hands plugins proxies (``is`` never matches): mark the layer instead,
            # so a reused layer is hooked once
            if not mask_layer.metadata.get("propl_paint_hooked"):
                # paint/fill/erase emit ``paint``; undo and redo only refresh (``set_data``);
                # replacing the data emits ``data``: each one may change what must be stored
                for event in (mask_layer.events.paint, mask_layer.events.set_data):
                    event.connect(self._on_mask_changed)
                mask_layer.events.data.connect(self._on_mask_changed)
                mask_layer.metadata["propl_paint_hooked"] = True
            self.labels_layer = mask_layer
            self.viewer.layers.selection.active = mask_layer
            if scan.shape != self._shown_shape:  # a reused layer keeps the old camera
                # fit the scan under review, not the (hidden) other images around it
                self.viewer.reset_view(layers=[shown[wanted["image"]]])
                self._shown_shape = scan.shape
            self.core.show(view)  # the time spent on it counts from here
            self.measurements.follow(self.viewer, mask_layer, scan.spacing_mm, view.task)
            self.clicks.scan_changed()
            self.calibration.stop()
            self.buttons["click"].setChecked(False)
            text = f"{scan.name}: {view.status}"
            if scan.burned_in_annotation:
                text += f" ({BURNED_IN})"
            if view.fit_warning:
                text += f"; {view.fit_warning}"
            if view.shape_note:
                text += f"; {view.shape_note}"
            if view.status == "draft":
                text += " (edited, not confirmed: Accept or Save correction makes it a label)"
            if view.worst_frame is not None:  # a cine opens at its least confident frame
                worst, conf = view.worst_frame
                self.viewer.dims.set_current_step(0, worst)
                text += f"; least confident frame {worst} ({conf:.2f})"
            elif self.viewer.dims.current_step[0] >= len(view.image):
                # a still after a cine: the slider (kept by hidden layers) would show nothing
                self.viewer.dims.set_current_step(0, 0)
            self.status_label.setText(text)
            for i in range(self.queue_list.count()):
                if self.queue_list.item(i).data(Qt.UserRole) == self.scan_id:
                    self.queue_list.setCurrentRow(i)

        _layers.run_staged(self.viewer, [read["image"], *read["updates"]], done)

    def spacing_changed(self, spacing: tuple[float, float]) -> None:
        """The scan under review was calibrated: its layers' scale and measurements follow."""
        for layer in self.viewer.layers:
            if "propl_review" in layer.metadata:
                layer.scale = (*tuple(layer.scale)[:-2], *spacing)
        if self.labels_layer is not None and self.scan_task:
            self.measurements.follow(self.viewer, self.labels_layer, spacing, self.scan_task)

    def _on_closing(self) -> None:
        """napari is closing: save a pending edit and wait until every save is stored."""
        if self._session is not None and self._session.project is not None:
            self._flush()
            self.wait_saved()

    def _on_mask_changed(self, _event: Any = None) -> None:
        if self.scan_id is not None:  # not while the layers are being refilled
            self._autosave_timer.start(AUTOSAVE_MS)
            self.measurements.schedule()

    def _changed_mask(self) -> np.ndarray | None:
        """A copy of the mask layer's data when it differs from what the store holds."""
        if self.labels_layer is None or self.scan_id is None:
            return None
        mask = np.array(self.labels_layer.data, np.uint8)
        return mask if self.core.is_changed(mask) else None

    def save_draft(self) -> Future | None:
        """Store the mask layer as a draft if it changed since the last save (any change:
        paint, fill, erase, undo, redo); a draft is kept, but never trains a model."""
        self._autosave_timer.stop()
        mask = self._changed_mask()
        return None if mask is None else self._submit("draft", mask)

    def _flush(self) -> None:
        """Store any change not stored yet (before another scan is shown, or on closing)."""
        self.save_draft()

    def accept(self) -> None:
        """Confirm the shown mask (accepted if unedited, else corrected), then the next scan."""
        self.confirm(advance=True)

    def confirm(self, advance: bool = False, whole: bool = False) -> Future | None:
        """Confirm the mask as a label: a still whole; a cine's frame on screen and the frames
        edited since they were last confirmed (``whole``: every frame)."""
        if self.labels_layer is None or self.scan_id is None:
            show_error("no scan is shown for review")
            return None
        mask = np.array(self.labels_layer.data, np.uint8)
        shown = None if whole else int(self.viewer.dims.current_step[0])
        return self._submit("accepted", mask, advance=advance, shown_frame=shown)

    def save(self, status: str, advance: bool = False) -> Future | None:
        """Save the current scan's review with ``status`` (rejected or skipped: no mask;
        draft, accepted or corrected: the mask layer's data, every frame)."""
        mask = None
        if status not in ("rejected", "skipped") and self.labels_layer is not None:
            mask = np.array(self.labels_layer.data, np.uint8)
        return self._submit(status, mask, advance=advance)

    def _submit(
        self,
        status: str,
        mask: np.ndarray | None,
        advance: bool = False,
        shown_frame: int | None = None,
    ) -> Future | None:
        """Save the review in the save thread (returns its future); saves keep their order.
        The save is bound to the shown scan and its task now; the core stores it there."""
        core, scan_id = self.core, self.scan_id
        if core.project is None or scan_id is None:
            show_error("no scan is shown for review")
            return None
        if status in ("rejected", "skipped") and not self.reason_edit.text().strip():
            self.reason_edit.setText(status)
        save = core.review_save(
            status,
            mask,
            shown_frame,
            reason=self.reason_edit.text(),
            provenance=self.clicks.provenance(),
        )

        def work() -> None:
            try:
                review = core.store(save)
            except Exception as exc:  # reported in the GUI; nothing already saved is touched
                self.save_failed.emit(f"could not save scan {scan_id}: {exc}")
                return
            self.saved.emit(review, advance)

        self._autosave_timer.stop()
        if advance:
            self.reason_edit.clear()
        return self._saver.submit(work)

    def wait_saved(self) -> None:
        """Block until every save made so far is in the store (tests, closing)."""
        self._saver.submit(lambda: None).result()

    def _on_saved(self, review: Any, advance: bool) -> None:
        what = describe(review.frames)
        if review.status == "draft":
            what += ": not a label until confirmed"
        self.status_label.setText(
            f"saved: {what} ({review.edited_pixels} edited pixels, "
            f"{review.seconds:.0f} s) by {review.author}"
        )
        if advance:
            self._advance_from = self.scan_id
        self.refresh_queue()


def _legend() -> QLabel:
    """What the colours on the scan mean, in plain words (rich text, wraps)."""
    outline = _layers.LOW_CONFIDENCE_COLOUR
    label = QLabel(
        f"<b style='color:{outline}'>yellow outline</b>: unsure, check first · "
        "<b style='color:#f98e09'>glow</b>: less sure"
    )
    label.setWordWrap(True)
    label.setToolTip(
        "Filled colour: the mask (paint on it to correct it). Yellow outline: the parts the "
        "model is unsure of; check them first. Glow (the uncertainty layer, purple → orange "
        "→ yellow): how much repeated predictions of the model disagree; none where it is "
        f"sure. The outline surrounds the parts at or above {OUTLINE_THRESHOLD:g} (the "
        "Segment widget's 'outline uncertainty ≥'). Hide a layer with its eye icon."
    )
    return label


def _read_queue(
    core: AnnotationSession, project: Any, task: str, include_reviewed: bool, read: int
) -> dict[str, Any]:
    """Worker body: the task's queue (least confident first) and its progress, one pass;
    ``project`` is the one the read was asked for (a read of another is dropped)."""
    queue = core.queue(task, include_reviewed)
    return {
        "read": read,
        "project": project,
        "items": queue.items,
        "progress": (queue.done, queue.total),
    }


def _read_for_review(core: AnnotationSession, scan_id: str, task: str) -> dict[str, Any]:
    """Worker body: the scan as the core reads it for review, and its layers' data."""
    _layers.warm_imports()
    view = core.read_scan(scan_id, task)
    scan = view.scan
    scale = (1.0, *(scan.spacing_mm or (1.0, 1.0)))
    colour = task_colour(task, core.require_project().tasks)
    low = _layers.low_confidence(view.uncertainty, OUTLINE_THRESHOLD)
    # role first, no task (the dock says which): "scan · X", "mask · X", …
    return {
        "view": view,
        "names": _layers.names(scan.name),
        "image": _layers.LayerUpdate(
            "image",
            f"scan{_layers.SEP}{scan.name}",
            view.image,
            # marked already when made: the Segment widget does not take it for an opened file
            dict(rgb=scan.is_color, scale=scale, metadata={"propl_review": "image"}),
        ),
        "updates": _layers.prediction_updates(
            scan.name, None, colour, view.mask, view.uncertainty, low, scale, defer_secondary=True
        ),
    }


def shortcut_text(keys: str) -> str:
    """A key sequence as the platform writes it (Return as the keyboard says: Enter)."""
    return QKeySequence(keys).toString(QKeySequence.NativeText).replace("Return", "Enter")
