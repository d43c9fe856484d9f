"""Predictions and reviews as napari layers: names, colours, and in-place updates."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

UNCERTAINTY_COLORMAP = "inferno"  # perceptually uniform, dark = certain


def mask_colormap(colour: str) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: colour})


def names(base: str, task: str) -> dict[str, str]:
    """Layer names for one image and task (the widgets find their layers by name)."""
    return {
        "mask": f"{base} [{task}]",
        "uncertainty": f"{base} uncertainty [{task}]",
        "low": f"{base} low confidence [{task}]",
    }


def low_confidence(uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """Regions to outline: uncertainty at or above ``threshold``, as labels 0/1."""
    return (uncertainty >= threshold).astype(np.uint8)


def upsert(viewer: Any, kind: str, name: str, data: np.ndarray, **kwargs: Any) -> Any:
    """Replace the data of layer ``name`` if it exists (keeps the user's display settings),
    else add a new layer of ``kind`` ("labels" or "image")."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        return layer
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    return add(data, name=name, **kwargs)


def show_prediction(
    viewer: Any,
    base: str,
    task: str,
    colour: str,
    mask: np.ndarray,
    uncertainty: np.ndarray,
    scale: tuple[float, ...],
    threshold: float,
) -> dict[str, Any]:
    """Add or update the pseudo-label, uncertainty and low-confidence outline layers."""
    n = names(base, task)
    layers = {
        "uncertainty": upsert(
            viewer,
            "image",
            n["uncertainty"],
            uncertainty,
            colormap=UNCERTAINTY_COLORMAP,
            contrast_limits=(0.0, 1.0),
            opacity=0.5,
            blending="additive",
            scale=scale,
            visible=False,
        ),
        "low": upsert(
            viewer,
            "labels",
            n["low"],
            low_confidence(uncertainty, threshold),
            scale=scale,
            opacity=0.9,
            colormap=mask_colormap("#ffff00"),
        ),
        "mask": upsert(
            viewer,
            "labels",
            n["mask"],
            mask,
            scale=scale,
            opacity=0.5,
            colormap=mask_colormap(colour),
        ),
    }
    layers["low"].contour = 2
    layers["low"].editable = False
    viewer.layers.selection.active = layers["mask"]
    return layers
