"""Prompting-upon-decoding: a decoder told by task prompt tokens which target to segment.

At each of three scales (1/32, 1/16, 1/8 of the input) the visual tokens run one self-attention
block, then attend to the task's prompt tokens, ``h = z + α·LayerNorm(CrossAttn(z, prompt))``,
then are upsampled and fused with the encoder's skip feature (ProPL, arXiv 2511.15057, Sec. 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_position(height: int, width: int, channels: int, device: torch.device) -> Tensor:
    """Fixed 2-D sine-cosine positional encoding ``(H*W, C)``; works for any input size."""
    quarter = max(channels // 4, 1)
    freq = torch.exp(torch.arange(quarter, device=device) * (-math.log(10000.0) / quarter))
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freq
    y_enc = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(height, width, -1)
    x_enc = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(height, width, -1)
    pos = torch.cat([y_enc, x_enc], -1).reshape(height * width, -1)
    return F.pad(pos, (0, channels - pos.shape[1]))


class Attention(nn.Module):
    """Multi-head attention on ``(B, N, C)`` tokens via ``scaled_dot_product_attention``."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        b, n, c = query.shape
        q = self.q(query).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)
        return self.out(h.transpose(1, 2).reshape(b, n, c))


class PromptProjector(nn.Module):
    """Project ``(B, L, D)`` prompt tokens to ``(B, L', C)``: 1-D conv over tokens, GELU, linear."""

    def __init__(self, n_in: int, n_out: int, dim: int, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv1d(n_in, n_out, 1)
        self.proj = nn.Linear(dim, channels)

    def forward(self, prompt: Tensor) -> Tensor:
        return self.proj(F.gelu(self.mix(prompt)))


class PromptStage(nn.Module):
    """Self-attention over visual tokens, then cross-attention to the prompt tokens.

    On maps larger than ``max_kv_tokens`` the self-attention's keys and values are average-pooled
    ×2 (spatial-reduction attention, as in PVT/SegFormer); queries keep full resolution. At 1/8
    of a 224² input this cuts the stage's attention cost by 4× on CPU.
    """

    def __init__(
        self,
        channels: int,
        prompt_dim: int,
        prompt_tokens: int,
        heads: int,
        alpha_init: float,
        max_kv_tokens: int = 256,
    ) -> None:
        super().__init__()
        self.max_kv_tokens = max_kv_tokens
        self.prompt = PromptProjector(prompt_tokens, prompt_tokens, prompt_dim, channels)
        self.norm_self = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, heads)
        self.cross_attn = Attention(channels, heads)
        self.norm_cross = nn.LayerNorm(channels)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, z: Tensor, prompt: Tensor) -> Tensor:
        """``z`` ``(B, C, H, W)``, ``prompt`` ``(B, L, D)`` → ``(B, C, H, W)``."""
        b, c, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2)
        pos = sincos_position(h, w, c, z.device).to(z.dtype)
        q = self.norm_self(tokens + pos)
        kv = q
        if h * w > self.max_kv_tokens and h % 2 == 0 and w % 2 == 0:
            grid = (tokens + pos).transpose(1, 2).reshape(b, c, h, w)
            kv = self.norm_self(F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2))
        tokens = tokens + self.self_attn(q, kv)
        p = self.prompt(prompt)
        tokens = tokens + self.alpha * self.norm_cross(self.cross_attn(tokens, p))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UpFuse(nn.Module):
    """Upsample ×2 and fuse the encoder skip feature (concatenation, 3×3 conv).

    ``x`` may hold T stochastic samples of the same images (batch T·B) while ``skip`` holds the
    B images once (MC dropout: only the deepest feature is dropped, so every sample shares the
    skips). The convolution over the concatenation is then split, ``W·[x; s] = W_x·x + W_s·s``,
    and the skip's half is computed once for all T samples instead of T times: the same
    numbers (up to float rounding) for less work and no T-fold copy of the skips.
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(c_in + c_skip, c_out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if x.shape[0] == skip.shape[0]:
            return self.fuse(torch.cat([x, skip], 1))
        b = skip.shape[0]
        if x.shape[0] % b:
            raise ValueError(f"x batch {x.shape[0]} is not a multiple of skip batch {b}")
        conv: nn.Conv2d = self.fuse[0]  # type: ignore[assignment]
        c_x, pad = x.shape[1], conv.padding
        y = F.conv2d(x, conv.weight[:, :c_x], conv.bias, padding=pad)
        s = F.conv2d(skip, conv.weight[:, c_x:], None, padding=pad)
        y = (y.unflatten(0, (-1, b)) + s).flatten(0, 1)
        return self.fuse[2](self.fuse[1](y))


class PromptedDecoder(nn.Module):
    """Decoder with prompt stages at 1/32, 1/16, 1/8, fused down to 1/4, one logit map out.

    Args:
        skip_channels: encoder channels at strides 4, 8, 16, 32.
        channels: decoder widths at strides 32, 16, 8, 4.
        dropout: dropout on the deepest feature before decoding (decoder 1 of ProPL); 0 for none.
    """

    def __init__(
        self,
        skip_channels: Sequence[int],
        channels: Sequence[int],
        prompt_dim: int,
        prompt_tokens: int,
        heads: int,
        alpha_init: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        s4, s8, s16, s32 = skip_channels
        c32, c16, c8, c4 = channels
        self.dropout = float(dropout)
        self.lateral = conv_bn_relu(s32, c32, kernel=1)
        self.stages = nn.ModuleList(
            PromptStage(c, prompt_dim, prompt_tokens, heads, alpha_init) for c in (c32, c16, c8)
        )
        self.ups = nn.ModuleList([UpFuse(c32, s16, c16), UpFuse(c16, s8, c8), UpFuse(c8, s4, c4)])
        self.head = nn.Conv2d(c4, 1, 1)

    def forward(self, features: Sequence[Tensor], prompt: Tensor, mc: bool = False) -> Tensor:
        """Decode encoder features to logits at 1/4 of the input resolution.

        Args:
            features: ``[(B, s4, H/4, W/4), ..., (B, s32, H/32, W/32)]``; the deepest may
                hold T samples of each image (batch T·B) sharing the other three (batch B).
            prompt: ``(B, L, D)`` the task prompt tokens of each image (batch of the deepest).
            mc: keep dropout active even in eval mode (Monte-Carlo dropout).

        Returns:
            ``(B, 1, H/4, W/4)`` logits.
        """
        f4, f8, f16, f32 = features
        if self.dropout > 0:
            f32 = F.dropout(f32, self.dropout, training=self.training or mc)
        z = self.lateral(f32)
        for stage, up, skip in zip(self.stages, self.ups, (f16, f8, f4), strict=True):
            z = up(stage(z, prompt), skip)
        return self.head(z)
