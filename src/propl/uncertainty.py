"""Uncertainty, pseudo-label calibration and confidence: pure functions on probabilities.

Shapes: probabilities are sigmoid outputs ``(B, 1, H, W)``; Monte-Carlo (MC dropout) samples
are stacked first, ``(T, B, 1, H, W)``. Nothing here runs a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BELIEF_FLOOR",
    "PSEUDO_LABEL_MODES",
    "PseudoLabel",
    "binary_entropy",
    "confidence_score",
    "disagreement",
    "expected_error_fraction",
    "hermes_mask",
    "make_pseudo_label",
    "mc_statistics",
    "mc_uncertainty",
    "OUTLINE_THRESHOLD",
    "uncertainty_map",
    "uplc_calibrate",
]

PSEUDO_LABEL_MODES = ("uplc", "weighted", "agreement")

#: The largest variance of a variable in [0, 1] (half 0, half 1): normalises the MC std.
_MAX_STD = 0.5

#: Default level of :func:`mc_uncertainty` at or above which the plugin outlines a region
#: (σ ≥ 0.011): 1–6 % of the pixels, holding 21–42 % of the error pixels, for the shipped
#: model and for a new task's first models alike (``flagged`` in
#: ``benchmarks/results/uncertainty-maps.json``; the old map at its old level flagged 94 % of
#: the pixels after 10 corrected scans).
OUTLINE_THRESHOLD = 0.15

#: Foreground probability below which :func:`confidence_score` counts a pixel as background.
BELIEF_FLOOR = 0.05


def mc_statistics(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel mean μ and population variance σ² over MC samples.

    Args:
        samples: ``(T, B, 1, H, W)`` sigmoid probabilities from T stochastic passes.

    Returns:
        ``(mean, var)``, each ``(B, 1, H, W)``; var is 0 when T = 1.
    """
    if samples.ndim < 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must be (T, B, 1, H, W) with T >= 1, got {tuple(samples.shape)}")
    return samples.mean(dim=0), samples.var(dim=0, correction=0)


def binary_entropy(p: Tensor, eps: float = 1e-6) -> Tensor:
    """Entropy of a Bernoulli(p) in bits: 1 at p = 0.5, ≈ 0 at p = 0 or 1.

    Args:
        p: probabilities, any shape.
        eps: p is clamped to [eps, 1 − eps] so that log is finite.

    Returns:
        Same shape as ``p``, in [0, 1].
    """
    q = p.clamp(eps, 1.0 - eps)
    h = -(q * torch.log2(q) + (1.0 - q) * torch.log2(1.0 - q))
    return h.clamp(0.0, 1.0)


def disagreement(p1: Tensor, p2: Tensor) -> Tensor:
    """|p1 − p2| of two probability maps of the same shape, in [0, 1]."""
    return (p1 - p2).abs().clamp(0.0, 1.0)


def uplc_calibrate(mean: Tensor, var: Tensor, gamma: float = 2.0) -> Tensor:
    """The paper's UPLC calibration p̂ = μ · exp(−(σ²)^γ).

    Args:
        mean: ``(B, 1, H, W)`` MC mean μ.
        var: ``(B, 1, H, W)`` MC variance σ² (≤ 0.25 for sigmoid outputs).
        gamma: the exponent γ (2 in the paper).

    Returns:
        ``(B, 1, H, W)`` calibrated probabilities, ≤ μ.
    """
    return mean * torch.exp(-var.clamp_min(0.0).pow(gamma))


@dataclass(frozen=True)
class PseudoLabel:
    """A pseudo-label and its per-pixel loss weight.

    Attributes:
        target: ``(B, 1, H, W)`` float in {0, 1}.
        weight: ``(B, 1, H, W)`` float in [0, 1]; 0 = pixel ignored by the loss.
    """

    target: Tensor
    weight: Tensor


def make_pseudo_label(
    mean: Tensor,
    var: Tensor,
    *,
    mode: str = "uplc",
    gamma: float = 2.0,
    p2: Tensor | None = None,
    threshold: float = 0.5,
    var_max: float = 0.05,
) -> PseudoLabel:
    """Pseudo-label for decoder 2 from decoder 1's MC statistics.

    Modes:
        ``"uplc"`` (the paper): target = uplc_calibrate(μ, σ², γ) > threshold, weight 1.
        ``"weighted"``: target = μ > threshold, weight = (1 − H(μ)) · clamp(1 − σ²/var_max,
        0, 1), so only confident *and* stable pixels count. Why: sigmoid variance is at most
        0.25, so (σ²)^2 ≤ 0.0625 and UPLC only flips pixels within a few percent of 0.5; it
        never down-weights a wrong but unstable pixel far from 0.5.
        ``"agreement"``: target = μ > threshold, weight 1 where decoder 2 (``p2``) predicts the
        same class and σ² < var_max, else 0 (cross-decoder agreement).

    Args:
        mean: ``(B, 1, H, W)`` MC mean of decoder 1.
        var: ``(B, 1, H, W)`` MC variance of decoder 1.
        mode: one of :data:`PSEUDO_LABEL_MODES`.
        gamma: UPLC exponent.
        p2: ``(B, 1, H, W)`` decoder-2 probabilities; required by ``"agreement"``.
        threshold: foreground threshold.
        var_max: variance at which a pixel stops counting (``"weighted"``, ``"agreement"``).

    Raises:
        ValueError: unknown mode, ``var_max <= 0``, or ``"agreement"`` without ``p2``.
    """
    if mode not in PSEUDO_LABEL_MODES:
        raise ValueError(f"unknown pseudo-label mode {mode!r}; choose from {PSEUDO_LABEL_MODES}")
    if var_max <= 0:
        raise ValueError(f"var_max must be > 0, got {var_max}")
    if mode == "uplc":
        target = (uplc_calibrate(mean, var, gamma) > threshold).to(mean.dtype)
        return PseudoLabel(target=target, weight=torch.ones_like(mean))
    target = (mean > threshold).to(mean.dtype)
    if mode == "weighted":
        stability = (1.0 - var / var_max).clamp(0.0, 1.0)
        weight = (1.0 - binary_entropy(mean)) * stability
        return PseudoLabel(target=target, weight=weight.to(mean.dtype))
    if p2 is None:
        raise ValueError("mode 'agreement' needs p2 (decoder-2 probabilities)")
    agree = (mean > threshold) == (p2 > threshold)
    weight = (agree & (var < var_max)).to(mean.dtype)
    return PseudoLabel(target=target, weight=weight)


def _rampup(progress: float) -> float:
    """Sigmoid-shaped ramp exp(−5 (1 − t)²), t = progress clamped to [0, 1]; 1 at t = 1."""
    t = min(max(float(progress), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def hermes_mask(
    prob: Tensor, progress: float, *, tau_max: float = 0.95, tau_min_offset: float = 0.45
) -> Tensor:
    """Hermes dual-threshold mask: which pseudo-labelled pixels the loss keeps.

    Our reading of Hermes (arXiv 2508.02265) for one binary task:
    the two classes are foreground (confidence p) and background (1 − p); a pixel's class is
    its argmax and its confidence max(p, 1 − p). r_c = share of batch pixels whose confidence
    for class c exceeds ``tau_max``, divided by the larger share of the two classes (so the
    better-learnt class has r = 1; both 0 if no pixel is that confident). Class threshold
    τ_c = tau_max − tau_min_offset · (1 − r_c): a class the model is rarely sure of gets a
    lower bar. Entropy threshold τ_H = (0.75 + 0.25 · rampup(progress)) · ln 2 nats, with
    rampup(t) = exp(−5 (1 − t)²). A pixel is dropped only when its confidence < τ_c of its
    class AND its entropy > τ_H; as τ_H rises to ln 2 (the maximum entropy) the entropy
    test stops rejecting, so the mask loosens as training progresses.

    Args:
        prob: ``(B, 1, H, W)`` foreground probabilities (e.g. decoder 1's MC mean).
        progress: training progress in [0, 1].
        tau_max: the highest class threshold (0.95).
        tau_min_offset: how far a poorly learnt class's threshold drops (0.45).

    Returns:
        ``(B, 1, H, W)`` float mask, 1 = kept, 0 = ignored.
    """
    p = prob.float()
    conf_fg, conf_bg = p, 1.0 - p
    share = torch.stack([(conf_bg > tau_max).float().mean(), (conf_fg > tau_max).float().mean()])
    r = share / share.max().clamp_min(1e-12)
    tau_c = tau_max - tau_min_offset * (1.0 - r)  # (2,): background, foreground
    is_fg = p > 0.5
    tau_pixel = torch.where(is_fg, tau_c[1], tau_c[0])
    confidence = torch.where(is_fg, conf_fg, conf_bg)
    entropy_nats = binary_entropy(p) * math.log(2.0)
    tau_h = (0.75 + 0.25 * _rampup(progress)) * math.log(2.0)
    dropped = (confidence < tau_pixel) & (entropy_nats > tau_h)
    return (~dropped).to(prob.dtype)


def mc_uncertainty(var: Tensor) -> Tensor:
    """The per-pixel uncertainty shown to users, in [0, 1] (higher = less sure): the square
    root of the MC-dropout standard deviation normalised by its maximum 0.5, ``√(2σ)``.

    The MC standard deviation alone, not mixed with the entropy of the MC mean: it ranks the
    shown mask's error pixels as well as the entropy for a well-trained model and far better for
    the barely trained decoders of a new task, whose probabilities hover away from 0 and 1
    over the whole scan, so their entropy flags everything (AUROC 0.82 vs 0.71 after 10
    corrected scans: ``benchmarks/results/uncertainty-maps.json``). The square root changes no
    ranking; it spreads the small deviations where errors live (σ of a few hundredths) over
    the visible range of a map shown on [0, 1].

    Args:
        var: ``(B, 1, H, W)`` MC variance (:func:`mc_statistics`).

    Returns:
        Same shape, in [0, 1].
    """
    return (var.clamp_min(0.0).sqrt() / _MAX_STD).clamp(0.0, 1.0).sqrt()


def uncertainty_map(mean: Tensor, var: Tensor | None = None, p2: Tensor | None = None) -> Tensor:
    """A per-pixel uncertainty from one or more signals, in [0, 1] (higher = less sure); the
    map shown for a single-pass prediction (``Predictor(uncertainty="disagreement")``).

    The maximum of: entropy of ``mean`` in bits; MC std normalised by its maximum 0.5
    (``sqrt(var) / 0.5``) if ``var`` is given; |mean − p2| if ``p2`` is given. The maximum
    flags a pixel when any one signal doubts it.

    Args:
        mean: ``(B, 1, H, W)`` probabilities (MC mean, or a single decoder's output).
        var: ``(B, 1, H, W)`` MC variance, optional.
        p2: ``(B, 1, H, W)`` another decoder's probabilities, optional.

    Returns:
        ``(B, 1, H, W)`` in [0, 1].
    """
    unc = binary_entropy(mean)
    if var is not None:
        unc = torch.maximum(unc, var.clamp_min(0.0).sqrt() / _MAX_STD)
    if p2 is not None:
        unc = torch.maximum(unc, disagreement(mean, p2))
    return unc.clamp(0.0, 1.0)


def confidence_score(
    prob: Tensor, belief: Tensor, threshold: float = 0.5, floor: float = BELIEF_FLOOR
) -> Tensor:
    """Per-frame confidence in [0, 1]: the Dice the shown mask is expected to score, if the
    truth were drawn from the network's own ``belief`` (its probability of each pixel).

    ``(2·Σ m·b + 1) / (Σ m + Σ b + 1)`` with ``m`` the mask (``prob > threshold``) and ``b``
    the belief's foreground probability where it is at least ``floor`` (zero below). The
    :class:`~propl.inference.Predictor` scores the mask against the probabilities it was cut
    from (``belief = prob``), then multiplies by the mask's shape factor
    (:mod:`propl.task_shape`). The score falls when the belief puts
    foreground where the mask has none (a possible missed target), or less than certain
    foreground inside the mask, and the fall is relative to the target's size: it is read like
    a Dice. The ``floor`` drops the faint probability every background pixel keeps, so an
    empty frame the network is sure of scores 1 (the ``+ 1``, one pixel, decides the empty
    case), however large the frame.

    Why not the mean uncertainty of the map shown (the score before): on the review pools of
    the simulated annotator's first models, this one ranks scans by their true Dice better
    (Spearman 0.50–0.55 against 0.07–0.39) and its 10 least confident scans have a far lower
    true Dice, that is more to correct (``benchmarks/results/queue-scores.json``). Why the
    probabilities themselves and not decoder 1's MC-dropout mean (the belief before): with the
    shape factor, on the shipped model's test scans and the simulated annotator's pools, they
    rank scans by their true Dice better in 9 of 11 sets and put worse-segmented scans on the
    queue's first page in 7, at the cost of a Dice estimate 1–7 points more optimistic in 7
    (``benchmarks/results/queue-scores-shape.md``).

    Args:
        prob: ``(B, 1, H, W)`` foreground probabilities of the shown mask.
        belief: ``(B, 1, H, W)`` foreground probabilities of the second opinion.
        threshold: foreground threshold of the mask.
        floor: belief below this counts as background.

    Returns:
        ``(B,)`` in [0, 1].
    """
    mask, b = _mask_and_belief(prob, belief, threshold, floor)
    overlap = (mask * b).sum(dim=(1, 2, 3))
    total = mask.sum(dim=(1, 2, 3)) + b.sum(dim=(1, 2, 3))
    return ((2.0 * overlap + 1.0) / (total + 1.0)).clamp(0.0, 1.0)


def expected_error_fraction(
    prob: Tensor, belief: Tensor, threshold: float = 0.5, floor: float = BELIEF_FLOOR
) -> Tensor:
    """Per-frame fraction of pixels the shown mask is expected to get wrong, if the truth were
    drawn from the network's own ``belief``: ``mean |m − b|`` with ``m`` and ``b`` as in
    :func:`confidence_score` (``b`` zero below ``floor``).

    Where :func:`confidence_score` is relative to the target's size (a small nodule half
    missed scores as low as a large one), this counts pixels: how much there is to correct in
    the frame. Sorting by it puts the frames with the most expected correction first.

    Returns:
        ``(B,)`` in [0, 1].
    """
    mask, b = _mask_and_belief(prob, belief, threshold, floor)
    return (mask - b).abs().mean(dim=(1, 2, 3))


def _mask_and_belief(
    prob: Tensor, belief: Tensor, threshold: float, floor: float
) -> tuple[Tensor, Tensor]:
    if prob.shape != belief.shape or prob.ndim != 4:
        raise ValueError(
            f"prob and belief must both be (B, 1, H, W), got {tuple(prob.shape)} "
            f"and {tuple(belief.shape)}"
        )
    b = belief.float()
    return (prob > threshold).float(), torch.where(b >= floor, b, torch.zeros_like(b))
