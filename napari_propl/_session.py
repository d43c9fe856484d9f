"""One annotation session per viewer: the Qt face of :class:`propl.annotation.AnnotationSession`.

The core session (``Session.core``) holds the project, the task, the scan on screen and the
predictor, and every rule of the loop; this QObject re-emits its hooks as Qt signals (queued
to the GUI thread when a worker made the change) and adds the window's life cycle. It is
parented to the viewer's main window, so every dock widget finds the same one
(``session_for``) and it lives exactly as long as the window: no module globals.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QThreadPool, QTimer, Signal
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

from propl.annotation import AnnotationSession

if TYPE_CHECKING:
    from propl.inference import Predictor
    from propl.store import Project
    from propl.tasks import Task

SESSION_NAME = "propl_session"
WORKERS_WAIT_MS = 30_000  # on closing, for reads in flight (long workers are asked to stop)
log = logging.getLogger(__name__)


class Session(QObject):
    """The core session of a window, with Qt signals for its widgets."""

    project_changed = Signal()
    predictions_changed = Signal()  # the store has new predictions (queue must re-order)
    review_saved = Signal(str)  # a review was saved (its status): auto-retraining counts them
    model_changed = Signal()  # the project's current model version changed (promotion, rollback)
    tasks_changed = Signal()  # a task was added to the project
    task_changed = Signal(str)  # the task being reviewed changed: the Segment widget follows
    closing = Signal()  # the window was asked to close: save what is pending now
    closed = Signal()  # napari accepted the close: stop long work (the project closes next)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(SESSION_NAME)
        if parent is not None:
            parent.installEventFilter(self)
        self.core = AnnotationSession()
        from ._reader import prefer_for_dicom

        prefer_for_dicom()  # the plugin is in use: DICOM opens with it, without asking
        hooks: list[tuple[Any, Any]] = [
            (self.core.project_changed, self.project_changed.emit),
            (self.core.model_changed, self.model_changed.emit),
            (self.core.tasks_changed, self.tasks_changed.emit),
            (self.core.task_changed, self.task_changed.emit),
            (self.core.predictions_changed, self.predictions_changed.emit),
            (self.core.review_saved, lambda review: self.review_saved.emit(review.status)),
        ]
        for hook, emit in hooks:
            hook.connect(emit)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        """When the window is asked to close, widgets save what is pending. napari may then
        refuse the close (its confirm dialog, cancelled): everything stays open. Once napari
        has accepted it, widgets stop their long work, the workers still reading the project
        finish, and the project (and its writer lock) is closed, so the next viewer, here or
        elsewhere, can open it.

        Waiting here matters: a worker still inside a zarr read when Python exits waits
        forever for zarr's event loop, which has stopped by then, while Qt waits for the
        worker: napari would hang on quitting."""
        if obj is not self.parent() or event.type() != QEvent.Type.Close:
            return False
        self.closing.emit()
        obj.event(event)  # napari's own close handling, now, to learn whether it refuses
        if event.isAccepted():
            self.closed.emit()
            if not QThreadPool.globalInstance().waitForDone(WORKERS_WAIT_MS):
                log.warning(
                    "a worker still runs %d s after the window closed", WORKERS_WAIT_MS // 1000
                )
            self.close_project()
        return True  # delivered above; Qt reads the verdict off the event

    # -- the core session's, for the widgets ------------------------------------------------

    @property
    def project(self) -> Project | None:
        return self.core.project

    @property
    def task(self) -> str:
        return self.core.task

    def open_project(self, path: str | Path, create: bool = False) -> Project:
        """Open (or create) a project for writing; the previous one is closed first."""
        return self.core.open_project(path, create)

    def close_project(self) -> None:
        self.core.close_project()

    def model_path(self) -> Path | None:
        """The project's model: its current version, else the shipped one."""
        return self.core.model_path()

    def use_version(self, name: str | None, reason: str) -> None:
        """Make a model version current (None: the shipped model); the next segmentation
        loads it (hot swap, no restart)."""
        self.core.use_version(name, reason)

    def add_task(self, task: Task) -> None:
        self.core.add_task(task)

    def set_task(self, task: str) -> None:
        """The task the annotator is reviewing; widgets that segment follow it."""
        self.core.set_task(task)

    def predictor(self, model_path: str | Path, device: str, uncertainty: str = "mc") -> Predictor:
        """The predictor for a checkpoint folder on a device (loaded once, then reused; called
        from worker threads: the cache is locked)."""
        return self.core.predictor(model_path, device, uncertainty)


def session_for(widget: QWidget) -> Session:
    """The session of the window ``widget`` is docked in (created on first use)."""
    top = widget.window()
    found = top.findChild(Session, SESSION_NAME)
    if found is None:
        found = Session(top)
    return found


class SessionMember:
    """Mixin for the dock widgets: ``self.session`` is their window's session, found on first
    use, when ``_connect_session`` wires the widget to its signals (once)."""

    _session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = session_for(self)  # type: ignore[arg-type]
            self._connect_session(self._session)
        return self._session

    def _connect_session(self, session: Session) -> None:
        """Connect the widget's slots to ``session`` (override)."""

    def join_session_when_docked(self) -> None:
        """Join on the next event-loop turn, once napari has docked the widget, so it follows
        the session (project, model) without waiting for the user to touch it."""
        QTimer.singleShot(0, self._join_session)

    def _join_session(self) -> None:
        try:
            _ = self.session
        except RuntimeError:  # closed before the event loop came round
            pass


def tab_with(widget: QWidget, other_name: str) -> None:
    """Show ``widget``'s dock as a tab of the dock holding the widget named ``other_name`` in
    the same window (the three ProPL docks stacked are taller than a 1000 px screen)."""
    window = widget.window()
    other = window.findChild(QWidget, other_name)
    mine, theirs = _dock_of(widget), _dock_of(other) if other is not None else None
    if isinstance(window, QMainWindow) and mine and theirs and mine is not theirs:
        window.tabifyDockWidget(theirs, mine)
        mine.raise_()  # the dock just opened is the one shown


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent
