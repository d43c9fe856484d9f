"""Score a model on a benchmark folder split (protocol: docs/method.md, "Evaluation").

Masks are compared at the stored image resolution (predictions are resized back), Dice = 1 when
both masks are empty, HD95 skipped when either is empty; the score is the mean over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .data.benchmark import BenchmarkFolder
from .data.readers import read_mask, read_scan
from .inference import Predictor
from .metrics import UncertaintyAUROC, expected_calibration_error, score_case, summarize


def evaluate_folder(
    predictor: Predictor,
    folder: BenchmarkFolder,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Dice/IoU/HD95 per task and mDice, plus pixel calibration (ECE) and uncertainty AUROC.

    Args:
        predictor: the model to score (its uncertainty mode decides the AUROC's meaning).
        folder: a us-universal-style folder.
        split: ``"test"`` for reporting; never select checkpoints on it.
        tasks: task ids to score (default: every task both the model and the folder know).
        progress: called with (done, total) after each scan.

    Returns:
        ``summarize()``'s dict plus ``"ece"``, ``"uncertainty_auroc"`` and ``"split"``.
    """
    tasks = list(tasks or [t for t in folder.task_ids() if t in predictor.tasks])
    unknown = [t for t in tasks if t not in predictor.tasks]
    if unknown:
        raise KeyError(f"the model does not know task(s) {unknown}; it knows {predictor.tasks}")
    samples = [s for t in tasks for s in folder.samples(t, split)]
    per_task: dict[str, list] = {t: [] for t in tasks}
    auroc, eces = UncertaintyAUROC(), []
    for i, sample in enumerate(samples):
        frames, _ = read_scan(sample.image)
        gt = read_mask(sample.mask)
        pred = predictor.predict(frames[:1], sample.task)
        mask, prob, unc = pred.mask[0], pred.probability[0], pred.uncertainty[0]
        per_task[sample.task].append(score_case(mask, gt))
        eces.append(expected_calibration_error(prob, gt))
        if predictor.uncertainty != "none":
            auroc.update(unc, mask, gt)
        if progress:
            progress(i + 1, len(samples))
    result = summarize(per_task)
    result["split"] = split
    result["ece"] = float(np.mean(eces)) if eces else float("nan")
    result["uncertainty_auroc"] = auroc.compute() if predictor.uncertainty != "none" else None
    return result
