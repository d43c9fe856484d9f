"""Segmentation, calibration and uncertainty metrics on NumPy arrays.

The evaluation protocol they serve is in docs/method.md ("Evaluation").

Masks are binary arrays of any shape (anything non-zero is foreground). Conventions:

- Dice and IoU are 1.0 when both masks are empty and 0.0 when exactly one is.
- HD95 is NaN when either mask is empty (the protocol skips such cases when averaging).
- Every metric works on millions of pixels with sorting / ``bincount``, never a Python loop
  over pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SegScores",
    "UncertaintyAUROC",
    "dice",
    "expected_calibration_error",
    "hd95",
    "iou",
    "score_case",
    "summarize",
    "uncertainty_error_auroc",
]


def _binary_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of the same shape (ValueError otherwise)."""
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    return p, g


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P| + |G|) of two binary masks of the same (any) shape.

    Returns:
        In [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    p, g = _binary_pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU = |P∩G| / |P∪G| of two binary masks; 1.0 when both are empty, 0.0 when one is."""
    p, g = _binary_pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, g).sum()) / union


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-connected (face) background neighbour or on the image edge."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the boundaries of two masks.

    Surface distances as in MONAI / Metrics Reloaded: for each boundary pixel of one mask, the
    Euclidean distance to the nearest boundary pixel of the other (an exact distance
    transform); HD95 = max(95th percentile P→G, 95th percentile G→P). medpy instead takes the
    95th percentile of both directions pooled, which can be slightly smaller.

    Args:
        pred: ``(H, W)`` binary mask (any dimensionality works).
        gt: ``(H, W)`` binary mask, same shape.
        spacing: pixel size per axis, ``(row, col)`` in mm; None measures in pixels.

    Returns:
        The distance in pixels (or mm with ``spacing``); NaN when either mask is empty.
    """
    p, g = _binary_pair(pred, gt)
    if not p.any() or not g.any():
        return float("nan")
    if spacing is not None and len(spacing) != p.ndim:
        raise ValueError(f"spacing needs one value per axis ({p.ndim}), got {tuple(spacing)}")
    bp, bg = _boundary(p), _boundary(g)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    to_g = ndimage.distance_transform_edt(~bg, sampling=sampling)[bp]
    to_p = ndimage.distance_transform_edt(~bp, sampling=sampling)[bg]
    return float(max(np.percentile(to_g, 95), np.percentile(to_p, 95)))


def expected_calibration_error(prob: np.ndarray, gt: np.ndarray, n_bins: int = 15) -> float:
    """Pixel-level binary ECE of the foreground probability against the label.

    Pixels fall into ``n_bins`` equal-width bins of ``prob`` over [0, 1] (1.0 goes to the last
    bin); ECE = Σ_b (n_b / N) · |mean label_b − mean prob_b|. This is the reliability diagram
    of the foreground probability itself (not of max(p, 1 − p)).

    Args:
        prob: foreground probabilities in [0, 1], any shape.
        gt: binary labels, same shape.
        n_bins: number of bins.

    Returns:
        In [0, 1]; NaN for empty input.
    """
    p = np.asarray(prob, dtype=np.float64).ravel()
    g = (np.asarray(gt) != 0).ravel()
    if p.shape != g.shape:
        raise ValueError(f"prob and gt must have the same size, got {p.size} and {g.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if p.size == 0:
        return float("nan")
    idx = np.clip((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), 0, n_bins - 1)
    sum_prob = np.bincount(idx, weights=p, minlength=n_bins)
    sum_label = np.bincount(idx, weights=g.astype(np.float64), minlength=n_bins)
    # n_b · |mean_label_b − mean_prob_b| = |Σ label − Σ prob| over bin b
    return float(np.abs(sum_label - sum_prob).sum() / p.size)


def _errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    p, g = _binary_pair(pred, gt)
    return (p != g).ravel()


def uncertainty_error_auroc(uncertainty: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> float:
    """AUROC of per-pixel uncertainty as a detector of pixel errors (``pred != gt``).

    Rank-based (Mann-Whitney U, ties get their average rank): the probability that a random
    error pixel is more uncertain than a random correct pixel, ties counting one half.

    Args:
        uncertainty: per-pixel uncertainty, any shape (higher = less sure).
        pred: binary prediction, same shape.
        gt: binary ground truth, same shape.

    Returns:
        In [0, 1] (1 = errors are exactly the most uncertain pixels, 0.5 = chance); NaN when
        there are no errors or only errors.
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    err = _errors(pred, gt)
    if u.shape != err.shape:
        raise ValueError(f"uncertainty must match the masks' size, got {u.size} and {err.size}")
    n_pos = int(err.sum())
    n_neg = err.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # scipy.stats takes a second to import: only here

    ranks = rankdata(u, method="average")
    u_stat = ranks[err].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_stat / (float(n_pos) * float(n_neg)))


class UncertaintyAUROC:
    """Streaming uncertainty-vs-error AUROC over a whole test set, from two histograms.

    Keeps one histogram of uncertainty for error pixels and one for correct pixels, so memory
    is constant (2 × 130,049 counts). The bins have a fixed *relative* width, 2⁻¹⁰ of the value
    (the top ``precision_bits`` bits of the float32 mantissa, the float's exponent exact), not
    a fixed absolute width: uncertainty maps crowd most pixels near 0 (an MC-dropout standard
    deviation of 1e-4 on a certain pixel), and equal-width bins would tie them all and hide the
    ranking among them. Values are clipped to ``[0, max_value]``. Pixels in the same bin count
    as ties, so the result differs from :func:`uncertainty_error_auroc` only where two values
    are within 0.1 % of each other.
    """

    def __init__(self, max_value: float = 1.0, precision_bits: int = 10) -> None:
        if not max_value > 0 or not 0 <= precision_bits <= 23:
            raise ValueError(
                f"need max_value > 0 and 0 <= precision_bits <= 23, got {max_value}, "
                f"{precision_bits}"
            )
        self.max_value = float(max_value)
        self._shift = 23 - precision_bits
        # the float32 bit pattern of a value >= 0 is monotonic in the value
        self.n_bins = (int(np.float32(1.0).view(np.int32)) >> self._shift) + 1
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self.hist_error = np.zeros(self.n_bins, dtype=np.int64)
        self.hist_correct = np.zeros(self.n_bins, dtype=np.int64)

    def _bins(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (NaN as 0, clipped to ``[0, max_value]``)."""
        scaled = np.clip(np.nan_to_num(values, nan=0.0) / self.max_value, 0.0, 1.0)
        return np.asarray(scaled, dtype=np.float32).view(np.int32) >> self._shift

    def update(self, uncertainty: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image (or batch) of pixels; arrays of the same shape, as in the function."""
        u = np.asarray(uncertainty, dtype=np.float64).ravel()
        err = _errors(pred, gt)
        if u.shape != err.shape:
            raise ValueError(f"uncertainty must match the masks' size, got {u.size} and {err.size}")
        idx = self._bins(u)
        self.hist_error += np.bincount(idx[err], minlength=self.n_bins)
        self.hist_correct += np.bincount(idx[~err], minlength=self.n_bins)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile of every pixel's (clipped) uncertainty seen so far, to the bins'
        0.1 %; NaN before any pixel."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        counts = np.cumsum(self.hist_error + self.hist_correct)
        if counts[-1] == 0:
            return float("nan")
        idx = int(np.searchsorted(counts, max(1.0, q * counts[-1])))
        edge = np.array([idx << self._shift], dtype=np.int32).view(np.float32)[0]
        return float(edge) * self.max_value

    def flagged(self, threshold: float) -> tuple[float, float]:
        """Pixels at or above ``threshold`` (to the bins' 0.1 %), as fractions of all pixels
        and of the error pixels seen so far: what an outline at that level would cover."""
        first = int(self._bins(np.array([threshold]))[0])
        n_err = self.hist_error.sum()
        n_all = n_err + self.hist_correct.sum()
        err = self.hist_error[first:].sum()
        every = err + self.hist_correct[first:].sum()
        return (
            float(every / n_all) if n_all else float("nan"),
            float(err / n_err) if n_err else float("nan"),
        )

    def compute(self) -> float:
        """AUROC so far; NaN when no errors or no correct pixels were seen."""
        n_pos, n_neg = int(self.hist_error.sum()), int(self.hist_correct.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        neg = self.hist_correct.astype(np.float64)
        below = np.cumsum(neg) - neg  # correct pixels in strictly lower bins
        wins = (self.hist_error * (below + 0.5 * neg)).sum()
        return float(wins / (float(n_pos) * float(n_neg)))


@dataclass(frozen=True)
class SegScores:
    """One case's scores: Dice and IoU in [0, 1], HD95 in pixels (or mm; NaN if undefined)."""

    dice: float
    iou: float
    hd95: float


def score_case(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None
) -> SegScores:
    """Dice, IoU and HD95 of one ``(H, W)`` prediction against its ground truth."""
    return SegScores(dice=dice(pred, gt), iou=iou(pred, gt), hd95=hd95(pred, gt, spacing))


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarize(per_case: Mapping[str, Sequence[SegScores]]) -> dict[str, Any]:
    """Per-task means and the mean over tasks, as the protocol reports them.

    Args:
        per_case: task id → that task's per-case scores.

    Returns:
        ``{"mdice": %, "miou": %, "per_task": {task: {"dice": %, "iou": %, "hd95": px,
        "n": int}}}``. Dice/IoU are percentages (0-100); a task's HD95 is the mean over its
        cases where HD95 is finite; mDice/mIoU are the unweighted means of the task means
        (tasks without cases are left out). Values are rounded to 2 decimals; NaN when
        undefined.
    """
    per_task: dict[str, dict[str, Any]] = {}
    for task, scores in per_case.items():
        per_task[task] = {
            "dice": round(100.0 * _mean([s.dice for s in scores]), 2),
            "iou": round(100.0 * _mean([s.iou for s in scores]), 2),
            "hd95": round(_mean([s.hd95 for s in scores]), 2),
            "n": len(scores),
        }
    task_dice = [100.0 * _mean([s.dice for s in v]) for v in per_case.values()]
    task_iou = [100.0 * _mean([s.iou for s in v]) for v in per_case.values()]
    return {
        "mdice": round(_mean(task_dice), 2),
        "miou": round(_mean(task_iou), 2),
        "per_task": per_task,
    }
