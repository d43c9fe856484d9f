"""Judging a retrained version: which reviewed scans are held back, the Dice of a model on
them at the scans' own resolution, and how sure a gain over the current model is.

The held-back scans are chosen by a hash of their ids (:func:`select_held_back`), so the same
scans stay held back as more are reviewed and successive versions are judged on them;
:func:`judge` scores a model on them as the plugin would predict; :func:`gain_bound` is the
paired bootstrap that promotion needs to be sure of.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import RetrainError
from ..inference import Predictor
from ..metrics import dice
from ..models import ProPLNet

MIN_LABELLED = 2
"""Reviewed (scan, task) pairs needed to retrain: at least one to learn from, one to judge."""

HeldFrame = tuple[np.ndarray, np.ndarray, str, str]
"""One held-back frame: (pixels, reviewed mask, task, scan id)."""


def _bucket(scan_id: str, task: str) -> float:
    digest = hashlib.sha256(f"{scan_id}:{task}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def select_held_back(
    pairs: Sequence[tuple[str, str]], fraction: float
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split reviewed pairs into (train, held back): the ``fraction`` of pairs with the lowest
    hash of their ids (at least one each way). The choice depends on the ids only, so the same
    scans stay held back as more are reviewed and successive versions are judged on them.
    """
    if len(pairs) < MIN_LABELLED:
        raise RetrainError(
            f"need at least {MIN_LABELLED} reviewed scans to retrain (one is held back to judge "
            f"the new version); the project has {len(pairs)}"
        )
    ranked = sorted(pairs, key=lambda p: _bucket(*p))
    n_held = min(max(round(fraction * len(ranked)), 1), len(ranked) - 1)
    return ranked[n_held:], ranked[:n_held]


def judge(
    model: ProPLNet,
    frames: Sequence[HeldFrame],
    device: str,
    known: set[str] | None = None,
) -> dict[str, Any]:
    """Dice (%) of ``model`` on held-back frames at their own resolution, as the plugin would
    predict them: ``{"mdice": mean over tasks, "per_task": {task: mean over scans},
    "per_scan": {"scan:task": mean over its frames}}``.

    ``known``: the tasks the model has learnt (None: all of its tasks). A task it has not
    learnt scores 0: the plugin offers no prompt for it, so the annotator gets nothing, whatever
    the untrained prompt token the model was given for training would happen to draw."""
    predictor = Predictor(model, device=device, uncertainty="none")
    frame_scores: dict[str, list[float]] = {}
    for image, mask, task, scan_id in frames:
        if known is not None and task not in known:
            score = 0.0
        else:
            score = 100.0 * dice(predictor.predict(image, task).mask[0] > 0, mask > 0)
        frame_scores.setdefault(f"{scan_id}:{task}", []).append(score)
    per_scan = {k: float(np.mean(v)) for k, v in frame_scores.items()}
    per_task: dict[str, list[float]] = {}
    for key, value in per_scan.items():
        per_task.setdefault(key.rsplit(":", 1)[1], []).append(value)
    means = {t: float(np.mean(v)) for t, v in per_task.items()}
    return {"mdice": float(np.mean(list(means.values()))), "per_task": means, "per_scan": per_scan}


def without_scans(scores: dict[str, Any]) -> dict[str, Any]:
    """The scores of :func:`judge` without the per-scan part (for events and curves)."""
    return {k: v for k, v in scores.items() if k != "per_scan"}


def gain_bound(
    base: dict[str, float],
    new: dict[str, float],
    confidence: float,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """(gain, lower bound): the mDice gain (points) of ``new`` over ``base`` on the same
    held-back scans (``{"scan:task": Dice}``), and its one-sided lower ``confidence`` bound
    from a paired bootstrap that resamples scans within each task (a cine's frames stay
    together: they are not independent). With one scan per task the bound is the gain itself.
    """
    by_task: dict[str, list[float]] = {}
    for key in sorted(base):
        by_task.setdefault(key.rsplit(":", 1)[1], []).append(new[key] - base[key])
    gain = float(np.mean([np.mean(d) for d in by_task.values()]))
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for diffs in by_task.values():
        d = np.asarray(diffs)
        draws += d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    draws /= len(by_task)
    return gain, float(np.quantile(draws, 1.0 - confidence))
