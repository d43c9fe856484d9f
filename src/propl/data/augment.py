"""Batch augmentations on tensors (run on the training device, one ``torch.Generator``).

Images are ``(B, 1, H, W)`` floats in [0, 1]; masks ``(B, 1, H, W)`` floats in {0, 1}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=gen, device="cpu").to(device) * (hi - lo) + lo


def affine_theta(
    b: int,
    gen: torch.Generator,
    device: torch.device,
    zoom: tuple[float, float] = (0.95, 1.2),
    shift: float = 0.05,
    rotate_deg: float = 10.0,
    flip: bool = True,
) -> Tensor:
    """``(b, 2, 3)`` random affine matrices of the weak view (normalised coordinates)."""
    scale = 1.0 / _uniform(b, *zoom, gen, device)
    angle = _uniform(b, -rotate_deg, rotate_deg, gen, device) * math.pi / 180
    tx, ty = _uniform(b, -shift, shift, gen, device), _uniform(b, -shift, shift, gen, device)
    sign = torch.ones(b, device=device)
    if flip:
        sign = torch.where(torch.rand(b, generator=gen).to(device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack(
        [torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1
    )


def warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Apply ``theta`` to ``(B, C, H, W)`` at its own resolution (zeros outside)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_affine(
    x: Tensor,
    y: Tensor | None,
    gen: torch.Generator,
    zoom: tuple[float, float] = (0.95, 1.2),
    shift: float = 0.05,
    rotate_deg: float = 10.0,
    flip: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The weak view: random zoom (ProPL's 0.95-1.2), shift, small rotation, horizontal flip.

    The same geometric transform is applied to the image (bilinear) and the mask (nearest).
    """
    theta = affine_theta(x.shape[0], gen, x.device, zoom, shift, rotate_deg, flip)
    return warp(x, theta), None if y is None else warp(y, theta, "nearest")


def photometric(x: Tensor, gen: torch.Generator, strength: float = 1.0) -> Tensor:
    """The strong view's colour part: brightness, contrast, gamma, blur and speckle noise."""
    b, dev = x.shape[0], x.device
    s = strength
    bright = _uniform(b, -0.2 * s, 0.2 * s, gen, dev).view(b, 1, 1, 1)
    contrast = _uniform(b, 1 - 0.4 * s, 1 + 0.4 * s, gen, dev).view(b, 1, 1, 1)
    gamma = torch.exp(_uniform(b, -0.4 * s, 0.4 * s, gen, dev)).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1) ** gamma
    blur = torch.rand(b, generator=gen).to(dev) < 0.5 * s
    if bool(blur.any()):
        x = torch.where(blur.view(b, 1, 1, 1), gaussian_blur(x, sigma=1.0), x)
    noise = torch.randn(x.shape, generator=gen).to(dev) * 0.08 * s
    return (x * (1 + noise)).clamp(0, 1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def cutmix_boxes(b: int, h: int, w: int, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """UniMatch-style CutMix boxes ``(B, 1, H, W)`` in {0, 1}: area 2-40 %, aspect 0.3-3.3."""
    boxes = torch.zeros(b, 1, h, w)
    for i in range(b):
        if torch.rand(1, generator=gen).item() > p:
            continue
        area = (torch.rand(1, generator=gen).item() * 0.38 + 0.02) * h * w
        ratio = math.exp(
            torch.rand(1, generator=gen).item() * (math.log(10 / 3) * 2) - math.log(10 / 3)
        )
        bh = min(h, int(round(math.sqrt(area * ratio))))
        bw = min(w, int(round(math.sqrt(area / ratio))))
        top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        boxes[i, 0, top : top + bh, left : left + bw] = 1.0
    return boxes
