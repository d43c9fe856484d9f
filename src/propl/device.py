"""Pick the compute device: cuda > mps > cpu, or what the user asked for."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def select_device(requested: str = "auto") -> torch.device:
    """Return the device to use.

    Args:
        requested: ``"auto"`` (cuda > mps > cpu), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"``.

    Raises:
        ValueError: unknown name, or the requested device is not available here.
    """
    name = requested.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.split(":")[0] not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available here")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but MPS is not available here")
    return torch.device(name)
