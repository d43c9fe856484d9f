"""A plain 4-level U-Net: the speed reference of ``propl benchmark speed`` (not a registered
model; docs/benchmarks.md, "Speed on a 2-core CPU")."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(True),
    )


class UNet(nn.Module):
    """U-Net with 4 resolution levels, ``base`` channels at full resolution (1.9 M params at 32).

    Encoder widths base, 2·base, 4·base, bottleneck 8·base; bilinear upsampling and concatenated
    skips, two 3×3 conv-BN-ReLU per level.
    """

    def __init__(self, base: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        widths = [base, base * 2, base * 4]
        self.downs = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.downs.append(_double_conv(c, w))
            c = w
        self.bottom = _double_conv(c, 2 * c)
        self.ups = nn.ModuleList(_double_conv(3 * w, w) for w in reversed(widths))
        self.head = nn.Conv2d(base, 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` → ``(B, 1, H, W)`` logits (H, W divisible by 16)."""
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear")
            x = up(torch.cat([x, skip], 1))
        return self.head(x)
