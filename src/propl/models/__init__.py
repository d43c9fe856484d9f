"""Model registry: ``build_model(name, **kw)`` builds any registered segmentation network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .propl import ProPLConfig, ProPLNet

__all__ = ["MODELS", "ProPLConfig", "ProPLNet", "build_model", "list_models"]


def _propl(**kw: Any) -> ProPLNet:
    return ProPLNet(ProPLConfig(**kw))


def _propl_small(**kw: Any) -> ProPLNet:
    """Narrower decoders (half the width): for quick experiments and slow machines."""
    kw.setdefault("channels", (48, 32, 24, 16))
    kw.setdefault("prompt_dim", 32)
    kw.setdefault("heads", 2)
    return ProPLNet(ProPLConfig(**kw))


MODELS: dict[str, Callable[..., ProPLNet]] = {
    "propl": _propl,
    "propl-small": _propl_small,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def _check(name: str) -> None:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")


def build_model(name: str, **kw: Any) -> ProPLNet:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        **kw: keyword arguments of the model's config (``tasks`` is required for ProPL).

    Raises:
        KeyError: ``name`` is not registered (the message lists the valid names).
    """
    _check(name)
    model = MODELS[name](**kw)
    model.registry_name = name
    return model
