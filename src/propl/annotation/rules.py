"""The loop's rules as functions: how the queue advances, what a view reads, how a stored
scan is predicted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..task_fit import fit_warning
from .records import ScanView

if TYPE_CHECKING:
    from ..inference import Prediction, Predictor
    from ..store import Project


def step_in_queue(ids: Sequence[str], current: str | None, delta: int) -> str | None:
    """Previous/Next: ``delta`` places from ``current`` in ``ids``, held at the ends; the first
    scan when ``current`` is not listed; None when the queue is empty."""
    if not ids:
        return None
    index = list(ids).index(current) + delta if current is not None and current in ids else 0
    return ids[max(0, min(index, len(ids) - 1))]


def next_after_save(ids: Sequence[str], current: str | None) -> str | None:
    """After a decision ("and next"): the first other scan of the queue (the queue is least
    confident first, so this is the scan that most needs a look); None when none is left."""
    return next((i for i in ids if i != current), None)


def predict_scan(project: Project, predictor: Predictor, scan_id: str, task: str) -> Prediction:
    """Segment a stored scan and store its prediction (replacing the previous one), tagged
    with the predictor's model version."""
    pred = predictor.predict(project.image(scan_id), task)
    project.save_prediction(
        scan_id,
        task,
        pred.mask,
        pred.uncertainty,
        pred.confidence,
        predictor.version or "?",
        task_fit=pred.task_fit,
    )
    return pred


def read_scan(project: Project, scan_id: str, task: str) -> ScanView:
    """Everything a view shows of one scan for ``task`` (see :class:`ScanView`)."""
    scan = project.scan(scan_id)
    pred = project.prediction(scan_id, task)
    review = project.review(scan_id, task)
    shape = scan.shape[:3]
    if review is not None and review.mask is not None:
        mask = review.mask
    elif pred is not None:
        mask = pred.mask
    else:
        mask = np.zeros(shape, np.uint8)
    worst = None
    if pred is not None and len(pred.confidence) > 1:  # a cine opens at its worst frame
        f = int(np.argmin(pred.confidence))
        worst = (f, float(pred.confidence[f]))
    return ScanView(
        scan_id=scan_id,
        task=task,
        scan=scan,
        image=project.image(scan_id),
        mask=np.array(mask, np.uint8),
        uncertainty=pred.uncertainty if pred is not None else np.zeros(shape, np.float16),
        status=review.status if review is not None else "unreviewed",
        prediction=pred,
        fit_warning=fit_warning(task, pred.task_fit) if pred is not None else None,
        worst_frame=worst,
    )
