"""Predictions and reviews as napari layers: names, colours, and cheap in-place updates.

Creating a napari layer costs 100-200 ms of GUI time on a small CPU (its Qt controls and
shaders), whatever the data; replacing a layer's data costs a few ms. So the widgets build
every array in their worker threads, reuse layers when they exist, and create or update the
layers one per event-loop turn (``run_staged``), so the viewer never freezes for long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer

UNCERTAINTY_COLORMAP = "inferno"  # perceptually uniform, dark = certain
LOW_CONFIDENCE_COLOUR = "#ffff00"


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


@cache  # once per process; every worker calls it
def warm_imports() -> None:
    """Do in a worker thread what napari does lazily on the GUI thread when it makes its
    first Labels layer: import pandas, scikit-image and SciPy (``scipy.ndimage`` for the
    thumbnail pulls in ``scipy.linalg``), and fill vispy's cache of line dash patterns (its
    polygon overlay computes 13 patterns in a Python loop). Together about 0.6 s on 2 cores."""
    import pandas  # noqa: F401
    import scipy.linalg  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import skimage.color  # noqa: F401
    import skimage.util  # noqa: F401
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()  # the patterns are lru-cached module-wide; the atlas itself is dropped


@dataclass
class LayerUpdate:
    """One layer to show: created when missing, else its data (and scale) replaced."""

    kind: str  # "image" or "labels"
    name: str
    data: np.ndarray
    kwargs: dict[str, Any] = field(default_factory=dict)
    first: int | None = None  # set: ``data`` replaces frames first.. of the existing layer
    after: dict[str, Any] = field(default_factory=dict)  # napari takes these after creation

    def apply(self, viewer: Any) -> Any:
        layer = viewer.layers[self.name] if self.name in viewer.layers else None
        if layer is not None and self.first is not None and _fits_frames(layer, self):
            layer.data[self.first : self.first + len(self.data)] = self.data
            layer.refresh()
            return layer
        if layer is not None and _same_kind(layer, self):
            layer.data = self.data
            scale = self.kwargs.get("scale")
            if scale is not None and not np.array_equal(layer.scale, scale):
                layer.scale = scale  # setting it re-lays out the viewer, even when unchanged
            return layer
        if layer is not None:
            viewer.layers.remove(layer)
        add = viewer.add_labels if self.kind == "labels" else viewer.add_image
        layer = add(self.data, name=self.name, **self.kwargs)
        for attr, value in self.after.items():
            setattr(layer, attr, value)
        return layer


def _same_kind(layer: Any, update: LayerUpdate) -> bool:
    from napari.layers import Image, Labels

    cls = Labels if update.kind == "labels" else Image
    rgb = bool(update.kwargs.get("rgb", False))
    return (
        isinstance(layer, cls)
        and np.ndim(layer.data) == update.data.ndim
        and (update.kind == "labels" or bool(layer.rgb) == rgb)
    )


def _fits_frames(layer: Any, update: LayerUpdate) -> bool:
    data = layer.data
    assert update.first is not None
    return (
        isinstance(data, np.ndarray)
        and data.dtype == update.data.dtype
        and data.shape[1:] == update.data.shape[1:]
        and update.first + len(update.data) <= len(data)
    )


def prediction_updates(
    base: str,
    task: str,
    colour: str,
    mask: np.ndarray,
    uncertainty: np.ndarray,
    low: np.ndarray,
    scale: tuple[float, ...],
    first: int | None = None,
) -> list[LayerUpdate]:
    """The pseudo-label, uncertainty and low-confidence outline layers of one prediction
    (mask last, so it ends up on top and selected)."""
    n = names(base, task)
    return [
        LayerUpdate(
            "image",
            n["uncertainty"],
            uncertainty,
            dict(
                colormap=UNCERTAINTY_COLORMAP,
                contrast_limits=(0.0, 1.0),
                opacity=0.5,
                blending="additive",
                scale=scale,
                visible=False,
            ),
            first,
        ),
        LayerUpdate(
            "labels",
            n["low"],
            low,
            dict(scale=scale, opacity=0.9, colormap=mask_colormap(LOW_CONFIDENCE_COLOUR)),
            first,
            after={"contour": 2, "editable": False},
        ),
        LayerUpdate(
            "labels",
            n["mask"],
            mask,
            dict(scale=scale, opacity=0.5, colormap=mask_colormap(colour)),
            first,
        ),
    ]


def run_staged(
    viewer: Any,
    updates: Iterable[LayerUpdate],
    done: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Apply ``updates`` one per event-loop turn, then call ``done`` with the layers by name.

    Between two updates Qt paints and handles input, so the longest freeze is one layer's
    creation instead of all of them.
    """
    pending = list(updates)
    shown: dict[str, Any] = {}

    def step() -> None:
        if pending:
            update = pending.pop(0)
            shown[update.name] = update.apply(viewer)
            QTimer.singleShot(0, step)
        elif done is not None:
            done(shown)

    QTimer.singleShot(0, step)


def show_now(viewer: Any, updates: Iterable[LayerUpdate]) -> dict[str, Any]:
    """Apply ``updates`` at once (small data, tests)."""
    return {u.name: u.apply(viewer) for u in updates}
