"""The "Segment (ProPL)" dock widget: a task prompt, a model, a scope; runs in a worker.

A project's scans are segmented and stored by the core session
(:meth:`propl.annotation.AnnotationSession.iter_segment`), which also says when the store has
new predictions (the Review queue re-orders); an image layer's frames are predicted here chunk
by chunk, for the layers, and stored through the session when they are a whole project scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from propl.exam import suggest_task
from propl.task_fit import (
    RANK_FRAMES,
    TaskMatch,
    fit_warning,
    rank_tasks_of_scan,
    task_fit_path,
)
from propl.task_shape import shape_note
from propl.tasks import DEFAULT_TASKS, task_colour
from propl.uncertainty import OUTLINE_THRESHOLD

from . import _layers
from ._compact import compact_combo
from ._session import Session, SessionMember

if TYPE_CHECKING:
    import napari

SCOPES = ("this frame", "all frames", "all scans in the project")


def default_model_path() -> str:
    from propl.inference import default_model_path as core_default

    path = core_default()
    return str(path) if path is not None else ""


class SegmentWidget(SessionMember, QWidget):
    """Segment the selected image (or the project) with a task prompt.

    Parameters
    ----------
    napari_viewer
        The viewer this widget belongs to (napari passes a proxy of it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("QtProplSegmentWidget")
        self._worker: Any = None
        self._displaying = False
        self._scope_for: str | None = None  # the image the scope was last chosen for
        self._picked: dict[str, str] = {}  # image → the task the user chose for it
        self._ranked: dict[tuple[str, str], list[TaskMatch]] = {}  # (image, model) → ranking
        self._suggesting = 0  # a suggestion's number: a later choice drops an earlier one
        self._setting_task = False  # the task combo is being set here, not by the user

        self.image_combo = compact_combo()
        self.model_edit = QLineEdit(default_model_path())
        self.model_edit.setPlaceholderText("checkpoint folder (model.safetensors + model.json)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        self.task_combo = compact_combo()
        self.task_hint = QLabel("")  # which task the image looks like (task fit, exam)
        self.task_hint.setWordWrap(True)
        # the whole row's width and two lines from the start: the dock is sized when docked,
        # and a hint that arrives later must not be cut to one line
        self.task_hint.setMinimumHeight(2 * self.task_hint.fontMetrics().lineSpacing() + 6)
        self.task_hint.setToolTip(
            "from how much the scan's features look like each task's training scans "
            "(task fit), or from the exam its DICOM file names; choose another task and it is "
            "kept for this image"
        )
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cuda", "cpu"])
        self.device_label = QLabel("device: (not loaded)")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(OUTLINE_THRESHOLD)
        self.run_button = QPushButton("Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", model_row)
        form.addRow("task prompt", self.task_combo)
        form.addRow(self.task_hint)
        form.addRow("device", self.device_combo)
        form.addRow("", self.device_label)
        form.addRow("scope", self.scope_combo)
        form.addRow("outline uncertainty ≥", self.threshold)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.result_label)
        layout.addStretch(1)
        # no taller than its form: a dock stacked with it (Review) gets the screen's height
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)

        self.image_combo.currentTextChanged.connect(self._on_image_chosen)
        self.task_combo.currentTextChanged.connect(self._on_task_chosen)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_edit.editingFinished.connect(self._refresh_tasks)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_images)
        self._refresh_images()
        self._refresh_tasks()
        self.join_session_when_docked()

    def _connect_session(self, session: Session) -> None:
        session.closed.connect(self.cancel)  # the worker stops at its next chunk of frames
        session.model_changed.connect(self._follow_project_model)
        session.task_changed.connect(self._follow_task)
        self._follow_project_model()
        self._follow_task(session.task)

    def _follow_task(self, task: str) -> None:
        """Prompt with the task being reviewed, when the model knows it (a new task is
        listed once a version that learnt it is current)."""
        if task and self.task_combo.findText(task) >= 0 and task != self.task_combo.currentText():
            self._suggesting += 1  # the annotator's task wins over a suggestion in flight
            self._set_task(task)

    def _follow_project_model(self) -> None:
        """Segment with the project's current model version, once it has one; back to the
        shipped model when the project rolls back to it. A model the user chose elsewhere is
        kept while the project has no version of its own."""
        project = self.session.project
        path = project.current_model_path() if project is not None else None
        if path is None:
            text = self.model_edit.text()
            if project is None or not Path(text).resolve().is_relative_to(project.root.resolve()):
                return
            path = Path(default_model_path())
        if self.model_edit.text() != str(path):
            self.model_edit.setText(str(path))
            self._refresh_tasks()

    # -- choices ---------------------------------------------------------------------------

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model checkpoint folder")
        if folder:
            self.model_edit.setText(folder)
            self._refresh_tasks()

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        layer.events.name.connect(self._refresh_images)  # the Review widget renames
        self._refresh_images()
        if _is_opened_image(layer):  # a file or sample just opened: it is what to segment
            self.image_combo.setCurrentText(layer.name)

    def _on_image_chosen(self, name: str) -> None:
        """Defaults for another image (not when the list is only refilled): a cine is
        segmented whole, a still is one frame (never over the project scope); the task
        prompt is the one the image looks most like, unless the user chose one for it."""
        if name == self._scope_for or name not in self.viewer.layers:
            return
        self._scope_for = name
        if self.scope_combo.currentText() != SCOPES[2]:
            many = _n_frames(self.viewer.layers[name]) > 1
            self.scope_combo.setCurrentText(SCOPES[1] if many else SCOPES[0])
        self._suggesting += 1
        self.task_hint.setText("")
        if name in self._picked:
            self._set_task(self._picked[name])
        else:  # once napari has docked the widget (the session is its window's)
            QTimer.singleShot(0, lambda n=self._suggesting: self._suggest_task_later(name, n))

    def _set_task(self, task: str) -> None:
        """Set the prompt without taking it for the user's choice."""
        if self.task_combo.findText(task) < 0:
            return
        self._setting_task = True
        try:
            self.task_combo.setCurrentText(task)
        finally:
            self._setting_task = False

    def _on_task_chosen(self, task: str) -> None:
        """The user chose a task: kept for this image, never replaced by a suggestion."""
        image = self.image_combo.currentText()
        if self._setting_task or not task or not image:
            return
        self._picked[image] = task
        self._suggesting += 1
        self.task_hint.setText("")

    def _suggest_task_later(self, name: str, number: int) -> None:
        try:
            self._suggest_task(name, number)
        except RuntimeError:  # the dock was closed before the event loop came round
            pass

    def _suggest_task(self, name: str, number: int) -> None:
        """Rank the tasks for the image in a worker (the model may have to load first)."""
        model = self.model_edit.text().strip()
        if number != self._suggesting or name not in self.viewer.layers:
            return
        if (name, model) in self._ranked:
            self._apply_suggestion(number, name, model, self._ranked[name, model])
            return
        if not model or not task_fit_path(model).is_file():  # no statistics: the exam alone
            self._apply_suggestion(number, name, model, [])
            return
        layer = self.viewer.layers[name]
        pick = np.unique(np.linspace(0, _n_frames(layer) - 1, RANK_FRAMES).round().astype(int))
        data = np.asarray(layer.data)  # a few frames copied here: the worker reads no layer
        frames = data[pick] if _is_stack(layer) else data[None]
        tasks = [self.task_combo.itemText(i) for i in range(self.task_combo.count())]
        session, device = self.session, self.device_combo.currentText()
        worker = create_worker(
            lambda: rank_tasks_of_scan(session.predictor(model, device), frames, tasks),
            _ignore_errors=True,  # no suggestion is no harm: Segment reports a bad model
        )
        worker.returned.connect(lambda r: self._apply_suggestion(number, name, model, r))
        worker.start()

    def _apply_suggestion(
        self, number: int, name: str, model: str, ranking: list[TaskMatch]
    ) -> None:
        try:
            self._show_suggestion(number, name, model, ranking)
        except RuntimeError:  # the dock was closed while the worker ran
            pass

    def _show_suggestion(
        self, number: int, name: str, model: str, ranking: list[TaskMatch]
    ) -> None:
        self._ranked[name, model] = ranking
        still_current = self.image_combo.currentText() == name and name not in self._picked
        if number != self._suggesting or not still_current or self.model_edit.text() != model:
            return  # another image, model or choice since
        tasks = [self.task_combo.itemText(i) for i in range(self.task_combo.count())]
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        exam = layer.metadata.get("propl_exam") if layer is not None else None
        project = self._session.project if self._session is not None else None
        known = [*DEFAULT_TASKS, *(project.tasks if project is not None else ())]
        suggestion = suggest_task(ranking, exam, tasks, known)
        if suggestion.task is not None:
            self._set_task(suggestion.task)
            if self._session is not None and self._session.project is None:
                self._session.set_task(suggestion.task)  # a project created next starts with it
        self.task_hint.setText(suggestion.why)

    def _refresh_images(self, *_: Any) -> None:
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)  # refilled, not chosen: the scope stays
        self.image_combo.clear()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and _layers.role_of(layer) != "uncertainty"
        ]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        self._on_image_chosen(self.image_combo.currentText())

    def _refresh_tasks(self) -> None:
        """Tasks come from the model's config (read without loading the weights)."""
        from propl.checkpoint import read_tasks
        from propl.tasks import DEFAULT_TASKS

        current = self.task_combo.currentText()
        try:
            tasks = read_tasks(self.model_edit.text())
        except ValueError:
            tasks = [t.id for t in DEFAULT_TASKS]
        self._setting_task = True  # refilled, not chosen
        try:
            self.task_combo.clear()
            self.task_combo.addItems(tasks)
            if current in tasks:
                self.task_combo.setCurrentText(current)
        finally:
            self._setting_task = False
        if self._session is not None:
            self._follow_task(self._session.task)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> Any:
        """Start segmentation in a worker; returns the worker (tests wait on it)."""
        model, task = self.model_edit.text().strip(), self.task_combo.currentText()
        device, scope = self.device_combo.currentText(), self.scope_combo.currentText()
        if not model or not Path(model).exists():
            show_error(f"no model at '{model}': choose a checkpoint folder")
            return None
        session = self.session  # resolved here: workers must not touch Qt objects
        project = session.project
        if scope == SCOPES[2]:
            if project is None:
                show_error("no project is open: open or create one in the Review widget")
                return None
            gen = self._segment_project(session, model, device, task)
        else:
            name = self.image_combo.currentText()
            if name not in self.viewer.layers:
                show_error("choose an image layer to segment")
                return None
            layer = self.viewer.layers[name]
            frames = np.asarray(layer.data)
            still = frames.ndim == (3 if layer.rgb else 2)
            if still:
                frames = frames[None]
            first = int(self.viewer.dims.current_step[0]) if scope == SCOPES[0] else 0
            first = min(first, len(frames) - 1)
            count = 1 if scope == SCOPES[0] else len(frames)
            job = _FramesJob(
                frames=frames,
                first=first,
                count=count,
                task=task,
                base=name,
                scale=(1.0, *tuple(layer.scale[-2:])),
                threshold=self.threshold.value(),
                scan_id=layer.metadata.get("propl_scan_id"),
                still=still,
                region=layer.metadata.get("propl_region"),
                # one frame into layers that already hold the whole scan: update in place
                in_place=count < len(frames) and self._has_layers(name, task, frames.shape[:3]),
            )
            gen = self._segment_frames(session, model, device, job)
        self._start(gen)
        return self._worker

    def _has_layers(self, base: str, task: str, shape: tuple[int, ...]) -> bool:
        layers = self.viewer.layers
        return all(
            n in layers and tuple(np.shape(layers[n].data)) == shape
            for n in _layers.names(base, task).values()
        )

    def _start(self, gen: Iterator[Any]) -> None:
        self._worker = create_worker(lambda: (yield from gen), _ignore_errors=True)
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_done)
        self._worker.errored.connect(lambda exc: show_error(f"segmentation failed: {exc}"))
        self._worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self._worker.start()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.result_label.setText("cancelled")

    def _on_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _on_finished(self) -> None:
        self._worker = None
        if not self._displaying:
            self._idle()

    def _idle(self) -> None:
        self._displaying = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _segment_frames(
        self, session: Session, model: str, device: str, job: _FramesJob
    ) -> Iterator[tuple[int, int]]:
        """Worker body: predict the job's frames and build every array the layers need."""
        predictor = session.predictor(model, device)
        _layers.warm_imports()
        # every chunk is converted as it arrives, into arrays allocated once: a big numpy
        # copy at the end would hold the GIL (and freeze the GUI) for most of a second
        shape = (job.count, *job.frames.shape[1:3])
        mask, unc, low = (
            np.empty(shape, np.uint8),
            np.empty(shape, np.float16),
            np.empty(shape, np.uint8),
        )
        conf = np.empty(job.count, np.float32)
        fits: list[np.ndarray] = []  # task fit per chunk (none when the model has no statistics)
        shapes: list[np.ndarray] = []  # shape factor per chunk (none without a shape floor)
        done = 0
        yield (0, job.count)
        chosen = job.frames[job.first : job.first + job.count]
        for part in predictor.iter_predict(chosen, job.task, region=job.region):
            n = len(part.mask)
            mask[done : done + n] = part.mask
            unc[done : done + n] = part.uncertainty
            low[done : done + n] = _layers.low_confidence(part.uncertainty, job.threshold)
            conf[done : done + n] = part.confidence
            if part.task_fit is not None:
                fits.append(part.task_fit)
            if part.shape_fit is not None:
                shapes.append(part.shape_fit)
            done += n
            yield (done, job.count)
        whole = job.count == len(job.frames)
        saved = session.project is not None and bool(job.scan_id) and whole
        if saved:
            assert job.scan_id is not None
            version = predictor.version or "?"
            fit = np.concatenate(fits) if fits else None
            shape_fit = np.concatenate(shapes) if shapes else None
            session.core.save_prediction(
                job.scan_id, job.task, mask, unc, conf, version, fit, shape_fit
            )
        first: int | None = job.first
        if not job.in_place and not whole:  # new layers: the scan's size, this frame filled
            mask, unc, low = (_padded(a, job.first, len(job.frames)) for a in (mask, unc, low))
            first = None
        elif whole:
            first = None
        scale = job.scale
        if job.still:  # layers as flat as the image: shown whatever frame the slider is at
            mask, unc, low, scale = mask[0], unc[0], low[0], scale[1:]
        updates = _layers.prediction_updates(
            job.base, job.task, task_colour(job.task), mask, unc, low, scale, first
        )
        return {
            "task": job.task,
            "first": job.first,
            "confidence": conf,
            "task_fit": np.concatenate(fits) if fits else None,
            "shape_fit": np.concatenate(shapes) if shapes else None,
            "updates": updates,
            "device": str(predictor.device),
            "saved": saved,
        }

    def _segment_project(
        self, session: Session, model: str, device: str, task: str
    ) -> Iterator[tuple[int, int]]:
        """Worker body: the core segments and stores every scan of the project."""
        report = yield from session.core.iter_segment(None, task, model, device)
        return {
            "project": True,
            "task": report.task,
            "n_scans": report.n_scans,
            "misfits": report.misfits,  # scans that do not look like the task's
            "device": report.device,
        }

    def _on_done(self, result: dict[str, Any]) -> None:
        self.device_label.setText(f"device: {result['device']}")
        if result.get("project"):
            text = f"{result['n_scans']} scans segmented for {result['task']}"
            if result.get("misfits"):
                text += f"; {result['misfits']} unlike the {result['task']} training scans"
            self.result_label.setText(text)
            return
        self._displaying = True
        _layers.run_staged(self.viewer, result["updates"], lambda shown: self._shown(result, shown))

    def _shown(self, r: dict[str, Any], shown: dict[str, Any]) -> None:
        """All layers are up to date: select the mask, report the confidence."""
        mask_layer = shown[r["updates"][-1].name]
        if mask_layer in self.viewer.layers:
            self.viewer.layers.selection.active = mask_layer
        conf, first, task = r["confidence"], r["first"], r["task"]
        worst = int(np.argmin(conf))
        text = f"{task}: confidence {float(np.mean(conf)):.2f}"
        if len(conf) > 1:
            text += f" (lowest {float(conf[worst]):.2f} at frame {first + worst})"
        if warning := fit_warning(task, r.get("task_fit")):
            text += f"; {warning}"
        if note := shape_note(task, r.get("shape_fit"), first):
            text += f"; {note}"
        self.result_label.setText(text)
        show_info(text)
        self._idle()


@dataclass(frozen=True)
class _FramesJob:
    """What the worker needs from the GUI, read on the GUI thread before it starts."""

    frames: np.ndarray
    first: int
    count: int
    task: str
    base: str  # the image layer's name
    scale: tuple[float, ...]
    threshold: float
    scan_id: str | None
    in_place: bool
    still: bool = False  # a 2-D image: its layers are 2-D too
    region: Any = None  # the imaging region (propl.region.Region) the reader found, or None


def _n_frames(layer: Any) -> int:
    """Frames of an image layer: (H, W) and (H, W, 3) are one, else the first axis."""
    return int(np.shape(layer.data)[0]) if _is_stack(layer) else 1


def _is_stack(layer: Any) -> bool:
    """Whether an image layer holds frames on its first axis (one-frame stacks included)."""
    return int(np.ndim(layer.data)) - (1 if layer.rgb else 0) >= 3


def _is_opened_image(layer: Any) -> bool:
    """An image the user opened (not one of the layers this plugin makes)."""
    meta = layer.metadata
    return (
        isinstance(layer, Image) and "propl_review" not in meta and _layers.role_of(layer) is None
    )


def _padded(chunk: np.ndarray, first: int, n_frames: int) -> np.ndarray:
    """``chunk`` placed at frame ``first`` of an all-zero stack of ``n_frames``."""
    out = np.zeros((n_frames, *chunk.shape[1:]), chunk.dtype)
    out[first : first + len(chunk)] = chunk
    return out
