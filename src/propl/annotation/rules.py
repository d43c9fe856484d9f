"""The loop's rules as functions: how the queue advances, what a view reads, how a stored
scan is predicted."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..task_fit import fit_warning
from ..task_shape import shape_note
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
    """Segment a stored scan's imaging region and store its prediction (replacing the
    previous one), tagged with the predictor's model version."""
    region = project.scan(scan_id).region
    pred = predictor.predict(project.image(scan_id), task, region=region)
    project.save_prediction(
        scan_id,
        task,
        pred.mask,
        pred.uncertainty,
        pred.confidence,
        predictor.version or "?",
        task_fit=pred.task_fit,
        shape_fit=pred.shape_fit,
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
        shape_note=shape_note(task, pred.shape_fit) if pred is not None else None,
        worst_frame=worst,
    )


def repredict_todo(
    project: Project, known: Collection[str], new_tasks: Collection[str]
) -> list[tuple[str, str]]:
    """The (scan, task) pairs a new current model re-predicts: every pair with no review that
    had a prediction, and every such scan of a task in ``new_tasks`` nothing was ever
    predicted for (a new task, learnt from its first corrections: its queue gets predictions).
    Drafts and decisions keep what the annotator saw. ``known``: the model's tasks."""
    scan_ids = project.scan_ids()
    todo = []
    for task in (t.id for t in project.tasks):
        if task not in known:
            continue
        had = {s: project.prediction_confidence(s, task) is not None for s in scan_ids}
        open_ = [s for s in scan_ids if project.review(s, task, with_mask=False) is None]
        never = task in new_tasks and not any(had.values())
        todo += [(s, task) for s in open_ if never or had[s]]
    return todo


def click_tool_note(result: Mapping[str, Any]) -> str:
    """``" (the click tool learnt from the corrections too)"`` when the round's tuned click
    head was kept (:func:`propl.train.refine.tune_on_corrections`), else nothing."""
    refine = result.get("refine") or {}
    return " (the click tool learnt from the corrections too)" if refine.get("kept") else ""


def round_summary(result: Mapping[str, Any], promoted: bool) -> str:
    """One line on a retraining round, from its ``version`` event's data."""
    name, score = result["version"], result["score"]
    text = (
        f"{name}: held-back Dice {'n/a' if score is None else f'{score:.1f}'} vs "
        f"{result['baseline_score']:.1f} for {result['baseline']}"
    )
    if promoted:
        return f"promoted {text}{click_tool_note(result)}"
    if result["outcome"] == "failed":
        return f"{name} failed ({result['message']}); the current model is unchanged"
    # the run's own reason: the gain, its bound, how many scans judged it
    return f"{name} kept but not used: {result.get('message') or text}"
