"""The click refinement head: a light network that edits a mask from clicks, SAM/RITM-style.

The heavy part (the encoder) runs once per frame; :meth:`RefineHead.embed` turns its four
feature maps, the frame and the task prompt into a per-frame embedding, also once. Each click
then runs only :meth:`RefineHead.decode`: the current mask, the click maps (positive and
negative disks) and an optional box channel meet the embedding in a small U-Net at 1/4 and 1/8
scale (dilated convolutions at 1/16 so one click reaches the whole frame), and a fine stage at
1/2 scale that also sees the frame sharpens the boundary. Output: mask logits at 1/2 scale.

No batch norm: the head behaves the same in training and inference, and the Predictor's
batch-norm folding leaves it untouched.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WIDTH_BOUNDS = (8, 256)
"""Inclusive bounds of :attr:`RefineConfig.width`."""
RADIUS_BOUNDS = (1.0, 64.0)
"""Inclusive bounds of :attr:`RefineConfig.click_radius`, in input pixels."""
MAP_CHANNELS = 4
"""Per-click input maps: current mask, positive clicks, negative clicks, box."""


@dataclass(frozen=True)
class RefineConfig:
    """Everything needed to rebuild a :class:`RefineHead` (saved in the model's config).

    Attributes:
        width: channels at 1/4 scale (twice that at 1/8 and 1/16, half at 1/2).
        click_radius: radius of a click's disk, in pixels of the network input.
    """

    width: int = 16
    click_radius: float = 5.0

    def __post_init__(self) -> None:
        """Validate the fields (type and bounds).

        Raises:
            TypeError: a field has the wrong type; the message names it.
            ValueError: a field is out of bounds; the message names it.
        """
        w = self.width
        if isinstance(w, bool) or not isinstance(w, numbers.Integral):
            raise TypeError(f"'refine.width' must be an integer, got {w!r}")
        if not WIDTH_BOUNDS[0] <= int(w) <= WIDTH_BOUNDS[1] or int(w) % 2:
            raise ValueError(f"'refine.width' must be an even number in {WIDTH_BOUNDS}, got {w!r}")
        r = self.click_radius
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise TypeError(f"'refine.click_radius' must be a number, got {r!r}")
        if not RADIUS_BOUNDS[0] <= float(r) <= RADIUS_BOUNDS[1]:
            raise ValueError(f"'refine.click_radius' must be in {RADIUS_BOUNDS}, got {r!r}")
        object.__setattr__(self, "width", int(w))
        object.__setattr__(self, "click_radius", float(r))

    @classmethod
    def from_value(cls, value: object) -> RefineConfig:
        """A config from a ``RefineConfig`` or the JSON object saved in ``model.json``.

        Raises:
            TypeError: ``value`` is neither, or has unknown keys.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"'refine' must be a JSON object, got {value!r}")
        unknown = sorted(set(value) - {"width", "click_radius"})
        if unknown:
            raise TypeError(f"'refine' has unknown keys {unknown}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv(c_in: int, c_out: int, dilation: int = 1, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)


class RefineHead(nn.Module):
    """Mask logits from cached encoder features, a task prompt, the current mask and clicks.

    Args:
        config: widths and click radius.
        skip_channels: channels of the encoder's four maps (strides 4, 8, 16, 32).
        prompt_dim: width of a task prompt token.
    """

    def __init__(
        self, config: RefineConfig, skip_channels: tuple[int, ...], prompt_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        w = config.width
        c4, c8, c16, c32 = skip_channels
        self.proj4 = nn.Conv2d(c4, w, 1)
        self.proj8 = nn.Conv2d(c8, w, 1)
        self.proj16 = nn.Conv2d(c16, 2 * w, 1)
        self.proj32 = nn.Conv2d(c32, 2 * w, 1)
        self.film = nn.Linear(prompt_dim, 6 * w)  # γ, β for the 1/4 (w) and 1/16 (2w) maps
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.maps = _conv(MAP_CHANNELS, w)
        self.down8 = _conv(w, 2 * w, stride=2)
        self.down16 = _conv(2 * w, 2 * w, stride=2)
        self.context = nn.ModuleList([_conv(2 * w, 2 * w, d) for d in (1, 2, 4)])
        self.up8 = _conv(4 * w, w)
        self.up4 = _conv(2 * w, w)
        self.coarse = nn.Conv2d(w, 1, 1)
        self.fine1 = _conv(w + 1 + MAP_CHANNELS, w // 2)
        self.fine2 = _conv(w // 2, w // 2)
        self.fine_out = nn.Conv2d(w // 2, 1, 1)
        self.mask_gain = nn.Parameter(torch.tensor(2.0))

    def embed(
        self,
        features: list[Tensor],
        image: Tensor,
        prompt: Tensor | None,
        keep: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The per-frame part, run once per frame (and task).

        Args:
            features: the encoder's four maps (``ProPLNet.encode``), strides 4 to 32.
            image: ``(B, 1, S, S)`` network input in [0, 1].
            prompt: ``(B, L, D)`` task prompt tokens, or None for a task the model does not
                know (no modulation).
            keep: ``(B,)`` weights of the prompt's modulation per frame (training drops the
                prompt of some frames so the head also works without one); None: all 1.

        Returns:
            ``{"e4": (B, w, S/4, S/4), "e16": (B, 2w, S/16, S/16), "image": (B, 1, S/2, S/2)}``.
        """
        f4, f8, f16, f32 = features
        e4 = self.proj4(f4) + F.interpolate(self.proj8(f8), size=f4.shape[-2:], mode="bilinear")
        e16 = self.proj16(f16) + F.interpolate(
            self.proj32(f32), size=f16.shape[-2:], mode="bilinear"
        )
        if prompt is not None:
            w = self.config.width
            film = self.film(prompt.mean(1))
            if keep is not None:
                film = film * keep[:, None].to(film.dtype)
            g4, b4, g16, b16 = film.split([w, w, 2 * w, 2 * w], 1)
            e4 = e4 * (1 + g4[..., None, None]) + b4[..., None, None]
            e16 = e16 * (1 + g16[..., None, None]) + b16[..., None, None]
        half = (f4.shape[-2] * 2, f4.shape[-1] * 2)
        img = F.interpolate(image, size=half, mode="area")
        return {"e4": e4, "e16": e16, "image": img}

    def decode(self, embedding: dict[str, Tensor], maps: Tensor) -> Tensor:
        """The per-click part.

        Args:
            embedding: from :meth:`embed`.
            maps: ``(B, 4, S/2, S/2)`` current mask (in [0, 1]), positive and negative click
                disks, box (:func:`click_maps`).

        Returns:
            ``(B, 1, S/2, S/2)`` mask logits.
        """
        e4 = embedding["e4"]
        if maps.shape[-2:] != embedding["image"].shape[-2:]:
            raise ValueError(
                f"maps must be {tuple(embedding['image'].shape[-2:])} (half the input), "
                f"got {tuple(maps.shape[-2:])}"
            )
        maps4 = F.interpolate(maps, size=e4.shape[-2:], mode="area")
        x4 = F.relu(e4 + self.maps(maps4))
        x8 = F.relu(self.down8(x4))
        x16 = F.relu(self.down16(x8) + embedding["e16"])
        for conv in self.context:
            x16 = x16 + F.relu(conv(x16))
        u8 = F.interpolate(x16, size=x8.shape[-2:], mode="bilinear")
        u8 = F.relu(self.up8(torch.cat([u8, x8], 1)))
        u4 = F.interpolate(u8, size=x4.shape[-2:], mode="bilinear")
        u4 = F.relu(self.up4(torch.cat([u4, x4], 1)))
        # The current mask as a prior at the output's resolution: where no click asks for a
        # change, keeping the mask is the easy answer.
        prior = self.mask_gain * (2 * maps[:, :1] - 1)
        coarse = F.interpolate(self.coarse(u4), size=maps.shape[-2:], mode="bilinear")
        z = F.interpolate(u4, size=maps.shape[-2:], mode="bilinear")
        z = F.relu(self.fine1(torch.cat([z, embedding["image"], maps], 1)))
        z = F.relu(self.fine2(z))
        return prior + coarse + self.fine_out(z)


def click_maps(
    mask: Tensor,
    points: Tensor,
    radius: float,
    box: Tensor | None = None,
) -> Tensor:
    """The head's per-click input maps at the mask's resolution.

    Args:
        mask: ``(B, 1, h, w)`` current mask in [0, 1].
        points: ``(B, N, 3)`` clicks as ``(y, x, sign)`` in the maps' pixel coordinates, sign
            +1 positive, -1 negative, 0 padding (ignored).
        radius: disk radius in map pixels.
        box: ``(B, 4)`` boxes ``(y0, x0, y1, x1)`` in map pixels (end exclusive), NaN rows for
            none; None: no boxes.

    Returns:
        ``(B, 4, h, w)``: mask, positive disks, negative disks, box.
    """
    b, _, h, w = mask.shape
    yy = torch.arange(h, dtype=mask.dtype, device=mask.device).view(1, 1, h, 1)
    xx = torch.arange(w, dtype=mask.dtype, device=mask.device).view(1, 1, 1, w)
    py, px, sign = (points[..., i, None, None].to(mask.dtype) for i in range(3))
    dist = ((yy - py) ** 2 + (xx - px) ** 2).sqrt()  # (B, N, h, w)
    disk = (radius + 0.5 - dist).clamp(0, 1)
    pos = (disk * (sign > 0)).amax(1, keepdim=True) if points.shape[1] else mask * 0
    neg = (disk * (sign < 0)).amax(1, keepdim=True) if points.shape[1] else mask * 0
    if box is None:
        boxes = mask * 0
    else:
        y0, x0, y1, x1 = (box[:, i].to(mask.dtype).view(b, 1, 1, 1) for i in range(4))
        inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        boxes = inside.to(mask.dtype)  # NaN bounds compare False: no box
    return torch.cat([mask, pos, neg, boxes], 1)
