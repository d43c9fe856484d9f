"""The annotation session's records: what it hands views, and its hooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store.records import QueueItem, Scan, StoredPrediction

if TYPE_CHECKING:
    from ..store import Project

log = logging.getLogger(__name__)

BURNED_IN = "marked as having burned-in annotation: its pixels may show patient identity"


class Hook:
    """Callbacks for one kind of change: a tiny observer list (not a Qt signal).

    Args:
        name: what changed, for log messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable[..., object]] = []
        self._lock = threading.Lock()

    def connect(self, callback: Callable[..., object]) -> Callable[..., object]:
        """Call ``callback`` on every :meth:`emit` (returns it: usable as a decorator)."""
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., object]) -> None:
        with self._lock:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        """Call every callback; one that fails is logged and the others still run (the change
        is stored already: a broken listener must not turn it into a failure)."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                log.exception("a %s callback failed", self.name)


@dataclass(frozen=True)
class QueueView:
    """A task's review queue, read in one pass.

    Attributes:
        items: the scans listed (least confident first; unpredicted and damaged last).
        done: scans of the task decided (labelled, rejected or skipped).
        total: scans of the task.
    """

    items: list[QueueItem]
    done: int
    total: int

    @property
    def ids(self) -> list[str]:
        return [q.scan_id for q in self.items]


@dataclass(frozen=True)
class ScanView:
    """What a view needs to show one scan for review.

    Attributes:
        scan_id: the scan.
        task: the task it was read for (saves go to this task).
        scan: its record (name, shape, spacing ...).
        image: ``(F, H, W)`` or ``(F, H, W, 3)`` frames.
        mask: ``(F, H, W)`` uint8, the mask to edit: the stored review's, else the prediction,
            else empty.
        uncertainty: ``(F, H, W)`` float16 (zeros without a prediction).
        status: the review's status, or ``"unreviewed"``.
        prediction: the stored prediction, or None.
        fit_warning: "does not look like the task's training scans", or None.
        shape_note: "the outline is unlike the task's masks", or None.
        worst_frame: ``(frame, confidence)`` of a cine's least confident frame; None for a
            still or without a prediction.
    """

    scan_id: str
    task: str
    scan: Scan
    image: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray
    status: str
    prediction: StoredPrediction | None = field(default=None, repr=False)
    fit_warning: str | None = None
    worst_frame: tuple[int, float] | None = None
    shape_note: str | None = None

    @property
    def warnings(self) -> list[str]:
        """What the annotator must be told about this scan."""
        out = [BURNED_IN] if self.scan.burned_in_annotation else []
        return out + [w for w in (self.fit_warning, self.shape_note) if w]


@dataclass(frozen=True)
class ReviewSave:
    """One save, bound to its scan when made (:meth:`AnnotationSession.review_save`) and
    stored later, possibly in another thread (:meth:`AnnotationSession.store`)."""

    project: Project = field(repr=False, compare=False)
    scan_id: str
    task: str
    status: str
    mask: np.ndarray | None = field(default=None, repr=False)
    shown_frame: int | None = None
    seconds: float = 0.0
    reason: str = ""
    author: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    """How the mask was made beyond the brush (clicks, boxes, propagation)."""


@dataclass(frozen=True)
class SegmentReport:
    """What :meth:`AnnotationSession.iter_segment` did."""

    task: str
    n_scans: int
    misfits: int  # scans that do not look like the task's training scans
    device: str


@dataclass(frozen=True)
class RoundOutcome:
    """A retraining round, settled (:meth:`AnnotationSession.settle_round`).

    Attributes:
        version: the version the run wrote.
        outcome: its run's verdict (better, worse, failed).
        promoted: whether it is current now (the unreviewed scans then need re-predicting).
        summary: one line for the annotator.
        learnt: the tasks the version knows (a new task gets its first predictions).
        error: why a version judged better could not be promoted, or None.
    """

    version: str
    outcome: str
    promoted: bool
    summary: str
    learnt: tuple[str, ...] = ()
    error: str | None = None
