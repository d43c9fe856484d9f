"""Inference-time folding of BatchNorm into the preceding convolution (same outputs, fewer ops)."""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (conv attribute, batch-norm attribute) pairs in the EfficientNet-Lite0 naming
M = TypeVar("M", bound=nn.Module)

_PAIRS = (
    ("_conv_stem", "_bn0"),
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
)


def fuse_batchnorm(model: M) -> M:
    """Return an eval-mode copy of ``model`` with every conv→BN pair folded into one conv.

    The original model is left untouched (it may still be trained).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        for conv_name, bn_name in _PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return fused
