"""The annotation session: one annotator's project, task, scan on screen and model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store.review_state import NOT_DONE, STATUSES, frames_to_confirm
from ..task_fit import fit_warning
from .records import Hook, QueueView, ReviewSave, RoundOutcome, ScanView, SegmentReport
from .rules import (
    next_after_save,
    predict_scan,
    read_scan,
    repredict_todo,
    round_summary,
    step_in_queue,
)

if TYPE_CHECKING:
    from ..inference import Predictor
    from ..store import Project, Review
    from ..tasks import Task
    from ..train.project import RetrainConfig
    from ..train.trainer import TrainEvent

REFUSALS = ("rejected", "skipped")
Progress = tuple[int, int]
"""(done, total) yielded by the long steps, for progress bars; stopping the generator
between two yields cancels (what was stored so far stays)."""


class AnnotationSession:
    """One annotator's loop over a project (see :mod:`propl.annotation`).

    Args:
        project: an open project (None: open one with :meth:`open_project`).
        task: the task under review ("" until one is chosen).
        device: where predictors run (``"auto"``: cuda > mps > cpu).
        uncertainty: the predictors' uncertainty mode (:class:`~propl.inference.Predictor`).
        author: who the reviews are recorded as (None: the user running this process).

    Attributes:
        project_changed: hook, no arguments: a project was opened or closed.
        model_changed: hook: the project's current model changed (promotion, rollback).
        tasks_changed: hook: a task was added to the project.
        task_changed: hook, ``(task)``: the task under review changed.
        predictions_changed: hook: the store has new predictions (the queue re-orders).
        review_saved: hook, ``(Review)``: a review is stored.
    """

    def __init__(
        self,
        project: Project | None = None,
        task: str = "",
        *,
        device: str = "auto",
        uncertainty: str = "mc",
        author: str | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._predictor_lock = threading.Lock()
        self._project, self._task = project, task
        self.device, self.uncertainty, self.author = device, uncertainty, author
        self._predictor: Predictor | None = None
        self._predictor_key: tuple[str, str, str] | None = None
        self._current: ScanView | None = None
        self._saved_mask: np.ndarray | None = None  # what the store holds for the open scan
        self._opened_at = 0.0
        self.project_changed = Hook("project changed")
        self.model_changed = Hook("model changed")
        self.tasks_changed = Hook("tasks changed")
        self.task_changed = Hook("task changed")
        self.predictions_changed = Hook("predictions changed")
        self.review_saved = Hook("review saved")

    # -- project and task ------------------------------------------------------------------

    @property
    def project(self) -> Project | None:
        return self._project

    def require_project(self) -> Project:
        """The open project.

        Raises:
            RuntimeError: none is open.
        """
        project = self._project
        if project is None:
            raise RuntimeError("no project is open")
        return project

    def open_project(self, path: str | Path, create: bool = False) -> Project:
        """Open (or create) a project for writing; the previous one is closed first.

        Raises:
            StoreError: not a project (or, creating, the folder is taken).
            StoreLockedError: another process is writing to it.
        """
        from ..store import Project

        self.close_project()
        project = Project.create(path) if create else Project.open(path)
        with self._lock:
            self._project, self._current = project, None
        self.project_changed.emit()
        self.model_changed.emit()
        return project

    def close_project(self) -> None:
        """Close the project (and release its writer lock); nothing is shown any more."""
        with self._lock:
            project, self._project, self._current = self._project, None, None
        if project is not None:
            project.close()
            self.project_changed.emit()
            self.model_changed.emit()

    def add_task(self, task: Task) -> None:
        self.require_project().add_task(task)
        self.tasks_changed.emit()

    @property
    def task(self) -> str:
        """The task under review ("" before one is chosen)."""
        return self._task

    def set_task(self, task: str) -> None:
        """Review ``task`` from now on (the queue, and what segmenting views prompt with)."""
        with self._lock:
            changed = bool(task) and task != self._task
            if changed:
                self._task = task
        if changed:
            self.task_changed.emit(task)

    def _task_or_current(self, task: str | None) -> str:
        task = task or self._task
        if not task:
            raise RuntimeError("choose a task first")
        return task

    # -- model -----------------------------------------------------------------------------

    def model_path(self) -> Path | None:
        """The project's model: its current version, else the shipped one (None: this build
        ships none)."""
        from ..inference import default_model_path

        project = self._project
        current = project.current_model_path() if project is not None else None
        return current if current is not None else default_model_path()

    def use_version(self, name: str | None, reason: str) -> None:
        """Make a model version current (None: the shipped model); the next prediction loads
        it (hot swap)."""
        self.require_project().set_current(name, reason)
        self.model_changed.emit()

    def predictor(
        self,
        model_path: str | Path | None = None,
        device: str | None = None,
        uncertainty: str | None = None,
    ) -> Predictor:
        """The predictor for a checkpoint folder (default: :meth:`model_path`), loaded once and
        reused while the folder, device and mode stay the same. Thread-safe: threads asking at
        once wait for the one load.

        Raises:
            CheckpointError: no model (this build ships none and the project has no version),
                or the folder is not a usable checkpoint.
        """
        from ..inference import Predictor, resolve_model

        path = resolve_model(model_path if model_path is not None else self.model_path())
        device, uncertainty = device or self.device, uncertainty or self.uncertainty
        key = (str(Path(path).resolve()), device, uncertainty)
        with self._predictor_lock:
            if self._predictor is None or self._predictor_key != key:
                self._predictor = Predictor.from_checkpoint(
                    path, device=device, uncertainty=uncertainty
                )
                self._predictor_key = key
            return self._predictor

    # -- the queue -------------------------------------------------------------------------

    def queue(self, task: str | None = None, include_reviewed: bool = False) -> QueueView:
        """The task's queue, least confident first: the scans still to decide (unreviewed,
        drafts, damaged), or every scan; with the progress, in one pass over the store."""
        project, task = self.require_project(), self._task_or_current(task)
        every = project.queue(task, include_reviewed=True)
        done = sum(q.status not in NOT_DONE for q in every)
        items = every if include_reviewed else [q for q in every if q.status in NOT_DONE]
        return QueueView(items, done, len(every))

    def _queue_ids(self, ids: Iterable[str] | None) -> list[str]:
        return list(ids) if ids is not None else self.queue().ids

    def next_scan(self, ids: Iterable[str] | None = None) -> str | None:
        """The scan after the open one in ``ids`` (default: the queue); see
        :func:`~propl.annotation.step_in_queue`."""
        return step_in_queue(self._queue_ids(ids), self._current_id(), 1)

    def previous_scan(self, ids: Iterable[str] | None = None) -> str | None:
        return step_in_queue(self._queue_ids(ids), self._current_id(), -1)

    def next_after_save(
        self, ids: Iterable[str] | None = None, decided: str | None = None
    ) -> str | None:
        """The scan to show after deciding ``decided`` (default: the open scan): the first
        other one of ``ids`` (default: the queue read now)."""
        return next_after_save(self._queue_ids(ids), decided or self._current_id())

    # -- the scan on screen ----------------------------------------------------------------

    @property
    def current(self) -> ScanView | None:
        """The scan on screen (None: none)."""
        return self._current

    def _current_id(self) -> str | None:
        current = self._current
        return current.scan_id if current is not None else None

    def read_scan(self, scan_id: str, task: str | None = None) -> ScanView:
        """Read a scan for review (the open scan does not change; see :meth:`show`)."""
        return read_scan(self.require_project(), scan_id, self._task_or_current(task))

    def show(self, view: ScanView | None) -> None:
        """``view`` is on screen now (None: nothing is, e.g. while a view swaps scans); the
        time spent on it counts from here. The view may edit ``view.mask`` in place (a paint
        layer does): the session keeps its own copy of what the store holds."""
        with self._lock:
            self._current, self._opened_at = view, time.monotonic()
            self._saved_mask = None if view is None else view.mask.copy()

    def open_scan(self, scan_id: str, task: str | None = None) -> ScanView:
        """Read a scan and make it the open one."""
        view = self.read_scan(scan_id, task)
        self.show(view)
        return view

    def is_changed(self, mask: np.ndarray) -> bool:
        """Whether ``mask`` differs from what the store holds for the open scan (a draft is
        due)."""
        saved = self._saved_mask
        if saved is None or saved.shape != mask.shape:
            return True
        return not np.array_equal(mask > 0, saved > 0)

    def shows_unreviewed(self) -> bool:
        """The open scan has no review: new predictions may replace what is shown."""
        project, current = self._project, self._current
        if project is None or current is None:
            return False
        return project.review(current.scan_id, current.task, with_mask=False) is None

    def review_save(
        self,
        status: str,
        mask: np.ndarray | None = None,
        shown_frame: int | None = None,
        reason: str = "",
        provenance: dict[str, Any] | None = None,
    ) -> ReviewSave:
        """A save of the open scan, bound to it now, to :meth:`store` (here or in a worker).

        Args:
            status: ``draft``, ``accepted`` (confirm: accepted or corrected per frame),
                ``corrected``, ``rejected`` or ``skipped``.
            mask: ``(F, H, W)`` (refusals store none; a confirmation without one confirms
                what the store holds).
            shown_frame: a confirmation of a cine: the frame on screen (it and the edited
                frames are confirmed); None: every frame.
            reason: why, for a refusal (default: the status).
            provenance: how the mask was made beyond the brush (e.g.
                :meth:`~propl.annotation.interaction.ScanInteraction.provenance`).

        Raises:
            RuntimeError: no scan is open.
            ValueError: an unknown status.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown review status {status!r}; choose one of {STATUSES}")
        with self._lock:
            current, project = self._current, self._project
            if current is None or project is None:
                raise RuntimeError("no scan is shown for review")
            if status in REFUSALS:
                mask, shown_frame, reason = None, None, reason.strip() or status
            else:
                reason = ""
            if mask is not None:
                mask = np.array(mask, np.uint8)
                self._saved_mask = mask
                if mask.shape[0] < 2:
                    shown_frame = None
            seconds = time.monotonic() - self._opened_at
        return ReviewSave(
            project,
            current.scan_id,
            current.task,
            status,
            mask,
            shown_frame,
            seconds,
            reason,
            self.author,
            dict(provenance or {}),
        )

    def store(self, save: ReviewSave) -> Review:
        """Store a save made by :meth:`review_save` (in the project it was made for); when
        this returns, it survives any crash. Calls :attr:`review_saved`."""
        frames = None
        if save.shown_frame is not None and save.mask is not None:
            frames = frames_to_confirm(
                save.project, save.scan_id, save.task, save.mask, save.shown_frame
            )
        review = save.project.save_review(
            save.scan_id,
            save.task,
            save.status,
            save.mask,
            frames=frames,
            author=save.author,
            seconds=save.seconds,
            reason=save.reason,
            provenance=save.provenance,
        )
        self.review_saved.emit(review)
        return review

    def save_draft(self, mask: np.ndarray) -> Review | None:
        """Store an edit as a draft (kept, never a training label); None when the store
        already holds this mask."""
        if not self.is_changed(mask):
            return None
        return self.store(self.review_save("draft", mask))

    def confirm(
        self, mask: np.ndarray | None = None, shown_frame: int | None = None, whole: bool = False
    ) -> Review:
        """Make the mask a label: accepted where it is the model's, corrected where edited.
        A still is confirmed whole; a cine's ``shown_frame`` and the frames edited since their
        last confirmation (``whole``, or no ``shown_frame``: every frame)."""
        return self.store(self.review_save("accepted", mask, None if whole else shown_frame))

    def reject(self, reason: str = "") -> Review:
        """The scan cannot be labelled (e.g. the target is not in it); no mask is stored."""
        return self.store(self.review_save("rejected", reason=reason))

    def skip(self, reason: str = "") -> Review:
        """Decide later (e.g. ask a colleague); no mask is stored."""
        return self.store(self.review_save("skipped", reason=reason))

    # -- predictions -----------------------------------------------------------------------

    def save_prediction(
        self,
        scan_id: str,
        task: str,
        mask: np.ndarray,
        uncertainty: np.ndarray,
        confidence: np.ndarray,
        version: str,
        task_fit: np.ndarray | None = None,
        shape_fit: np.ndarray | None = None,
    ) -> None:
        """Store a prediction made elsewhere (e.g. chunk by chunk in a view's worker)."""
        self.require_project().save_prediction(
            scan_id, task, mask, uncertainty, confidence, version, task_fit, shape_fit
        )
        self.predictions_changed.emit()

    def iter_segment(
        self,
        scan_ids: Iterable[str] | None = None,
        task: str | None = None,
        model_path: str | Path | None = None,
        device: str | None = None,
    ) -> Generator[Progress, None, SegmentReport]:
        """Predict and store ``scan_ids`` (default: every scan) for ``task``, one scan per
        yield; returns what was done. :attr:`predictions_changed` runs at the end."""
        project, task = self.require_project(), self._task_or_current(task)
        predictor = self.predictor(model_path, device)
        ids = list(scan_ids) if scan_ids is not None else project.scan_ids()
        yield (0, len(ids))
        misfits = 0
        for i, scan_id in enumerate(ids):
            pred = predict_scan(project, predictor, scan_id, task)
            misfits += fit_warning(task, pred.task_fit) is not None
            yield (i + 1, len(ids))
        self.predictions_changed.emit()
        return SegmentReport(task, len(ids), misfits, str(predictor.device))

    def segment(
        self, scan_ids: Iterable[str] | None = None, task: str | None = None
    ) -> SegmentReport:
        """:meth:`iter_segment` to the end."""
        return _run(self.iter_segment(scan_ids, task))

    def iter_repredict(self, new_tasks: Iterable[str] = ()) -> Generator[Progress, None, int]:
        """New predictions with the current model (which pairs:
        :func:`~propl.annotation.rules.repredict_todo`), one per yield; returns how many.
        :attr:`predictions_changed` runs at the end."""
        project = self.require_project()
        predictor = self.predictor(self.model_path())
        todo = repredict_todo(project, predictor.tasks, set(new_tasks))
        yield (0, len(todo))
        for i, (scan_id, task) in enumerate(todo):
            predict_scan(project, predictor, scan_id, task)
            yield (i + 1, len(todo))
        self.predictions_changed.emit()
        return len(todo)

    def repredict(self, new_tasks: Iterable[str] = ()) -> int:
        """:meth:`iter_repredict` to the end."""
        return _run(self.iter_repredict(new_tasks))

    # -- retraining ------------------------------------------------------------------------

    def promote(self, version: str) -> bool:
        """Make ``version`` current if its run judged it better than the model still current
        (:func:`~propl.promotion.promote_if_better`); :attr:`model_changed` runs if so. The
        unreviewed scans then need :meth:`iter_repredict`.

        Raises:
            CheckpointError: its checkpoint is broken (the current model is unchanged).
        """
        from ..promotion import promote_if_better

        promoted = promote_if_better(self.require_project(), version)
        if promoted:
            self.model_changed.emit()
        return promoted

    def settle_round(self, result: Mapping[str, Any]) -> RoundOutcome:
        """Promote the version a retraining run wrote if it is better (its ``version`` event's
        data), and say what happened."""
        name, outcome = str(result["version"]), str(result["outcome"])
        promoted, error = False, None
        learnt: tuple[str, ...] = ()
        if self._project is not None:
            try:
                promoted = self.promote(name)
            except (ValueError, RuntimeError, OSError) as exc:  # CheckpointError, StoreError
                error = f"could not promote {name}: {exc}"
        if promoted:
            learnt = tuple(self.require_project().version(name).tasks)
        summary = round_summary(result, promoted)
        return RoundOutcome(name, outcome, promoted, summary, learnt, error)

    def iter_retrain(
        self, config: RetrainConfig | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Generator[TrainEvent, None, RoundOutcome | None]:
        """Retrain in this process from the project's confirmed frames, yielding the run's
        events (:func:`~propl.train.project.retrain`), then settle the round (promotion).
        Returns None when stopped (``should_stop()`` true: nothing is written). Views that
        must survive a crash of training run ``propl train --no-promote`` in a subprocess
        and call :meth:`settle_round` with its ``version`` event instead."""
        from ..train.project import retrain

        project = self.require_project()
        result = None
        stop = should_stop or (lambda: False)
        for event in retrain(project.root, config, should_stop=stop):
            if event.kind == "version":
                result = dict(event.data)
            yield event
        return None if result is None else self.settle_round(result)


def _run(steps: Generator[Any, None, Any]) -> Any:
    """Run a generator to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
