"""Segmentation losses on logits, with optional per-pixel weights (0 = pixel ignored)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bce_dice(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0
) -> Tensor:
    """BCE + soft Dice, averaged over the batch.

    Args:
        logits: ``(B, 1, H, W)``.
        target: ``(B, 1, H, W)`` in [0, 1].
        weight: ``(B, 1, H, W)`` per-pixel weights in [0, 1], or None for all ones.

    Returns:
        A scalar. With weights, BCE is normalised by the total weight and Dice counts only
        weighted pixels, so ignored pixels contribute nothing.
    """
    logits, target = logits.float(), target.float()
    w = torch.ones_like(target) if weight is None else weight.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * w).sum() / w.sum().clamp_min(1.0)
    prob = torch.sigmoid(logits)
    inter = (prob * target * w).sum(dim=(1, 2, 3))
    denom = ((prob + target) * w).sum(dim=(1, 2, 3))
    dice = 1.0 - (2 * inter + eps) / (denom + eps)
    return bce + dice.mean()


def sigmoid_mse(logits: Tensor, target_prob: Tensor) -> Tensor:
    """Mean-squared error between probabilities (Mean Teacher's consistency)."""
    return F.mse_loss(torch.sigmoid(logits.float()), target_prob.float())
