"""One annotation session per viewer: the open project, the loaded model, the device.

The session is a QObject parented to the viewer's main window, so both dock widgets find the
same one (``session_for``) and it lives exactly as long as the window: no module globals.
It holds no GUI: widgets read it and connect to its signals.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, QThreadPool, QTimer, Signal
from qtpy.QtWidgets import QWidget

if TYPE_CHECKING:
    from propl.inference import Predictor
    from propl.store import Project
    from propl.tasks import Task

SESSION_NAME = "propl_session"
WORKERS_WAIT_MS = 30_000  # on closing, for reads in flight (long workers are asked to stop)
log = logging.getLogger(__name__)


class Session(QObject):
    """Project + predictor shared by the plugin's widgets."""

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
        self.project: Project | None = None
        self.task = ""  # the task being reviewed ("" before one is chosen)
        self._predictor: Predictor | None = None
        self._predictor_key: tuple[str, str, str] | None = None

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

    # -- project -------------------------------------------------------------------------

    def open_project(self, path: str | Path, create: bool = False) -> Project:
        """Open (or create) a project for writing; the previous one is closed first."""
        from propl.store import Project

        self.close_project()
        self.project = Project.create(path) if create else Project.open(path)
        self.project_changed.emit()
        self.model_changed.emit()
        return self.project

    def close_project(self) -> None:
        if self.project is not None:
            self.project.close()
            self.project = None
            self.project_changed.emit()
            self.model_changed.emit()

    # -- model ---------------------------------------------------------------------------

    def model_path(self) -> Path | None:
        """The project's model: its current version, else the shipped one."""
        from propl.inference import default_model_path

        if self.project is not None:
            current = self.project.current_model_path()
            if current is not None:
                return current
        return default_model_path()

    def use_version(self, name: str | None, reason: str) -> None:
        """Make a model version current (None: the shipped model) and tell the widgets:
        the next segmentation loads it (hot swap, no restart)."""
        if self.project is None:
            raise RuntimeError("no project is open")
        self.project.set_current(name, reason)
        self.model_changed.emit()

    def add_task(self, task: Task) -> None:
        if self.project is None:
            raise RuntimeError("no project is open")
        self.project.add_task(task)
        self.tasks_changed.emit()

    def set_task(self, task: str) -> None:
        """The task the annotator is reviewing; widgets that segment follow it."""
        if task and task != self.task:
            self.task = task
            self.task_changed.emit(task)

    def predictor(self, model_path: str | Path, device: str, uncertainty: str = "mc") -> Predictor:
        """The predictor for a checkpoint folder on a device (loaded once, then reused).

        Called from worker threads: loading a model takes a moment.
        """
        from propl.inference import Predictor

        key = (str(Path(model_path).resolve()), device, uncertainty)
        if self._predictor is None or self._predictor_key != key:
            self._predictor = Predictor.from_checkpoint(
                model_path, device=device, uncertainty=uncertainty
            )
            self._predictor_key = key
        return self._predictor


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
