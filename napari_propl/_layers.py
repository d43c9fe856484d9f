"""Predictions and reviews as napari layers: names, colours, and cheap in-place updates.

Creating a napari layer costs 100-200 ms of GUI time on a small CPU (its Qt controls and
shaders), whatever the data; replacing a layer's data costs a few ms, but every event-loop turn
that changes a layer is followed by a repaint of the window (40-55 ms under Xvfb's software
OpenGL). So the widgets build every array in their worker threads, reuse layers when they
exist, create missing layers one per event-loop turn and replace the data of existing ones
all in one turn (``run_staged``), so the viewer never freezes for long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer

from propl.uncertainty import OUTLINE_THRESHOLD

UNCERTAINTY_COLORMAP = "inferno"  # perceptually uniform, dark = certain
# additive over the scan: certain pixels add nothing (black), unsure ones glow; the outline
# level shows purple and four times it saturates, so the band around a mask shows without
# a doubtful scan turning into one bright blob
UNCERTAINTY_LIMITS = (0.0, 4 * OUTLINE_THRESHOLD)
LOW_CONFIDENCE_COLOUR = "#ffff00"
#: What each layer of a prediction is, first in its name (the layer list elides the middle
#: of a long name, so the role and the task stay readable).
ROLES = {"mask": "mask", "low": "uncertain outline", "uncertainty": "uncertainty"}
SEP = " · "


def mask_colormap(colour: str) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: colour})


def names(base: str, task: str | None = None) -> dict[str, str]:
    """Layer names for one image (and task), role first: "mask · scan [task]". The Review
    widget leaves the task out (it shows one task at a time, and says which)."""
    suffix = f" [{task}]" if task else ""
    return {role: f"{word}{SEP}{base}{suffix}" for role, word in ROLES.items()}


ROLE_KEY = "propl_role"


def role_of(layer: Any) -> str | None:
    """What a layer made here shows ("mask", "low", "uncertainty"), from its metadata:
    widgets tell layers apart by it, never by their names."""
    role = layer.metadata.get(ROLE_KEY)
    return str(role) if role is not None else None


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
    # an existing layer's new data may wait for a turn after ``done`` (a layer the annotator
    # only looks at): the longest freeze is then half the work of showing a scan
    deferred: bool = False

    def existing(self, viewer: Any) -> Any:
        """The viewer's layer of this name, or None."""
        return viewer.layers[self.name] if self.name in viewer.layers else None

    def creates(self, viewer: Any) -> bool:
        """Whether ``apply`` would create a layer (slow) rather than replace data (fast)."""
        layer = self.existing(viewer)
        return layer is None or not _same_kind(layer, self)

    def apply(self, viewer: Any) -> Any:
        layer = self.existing(viewer)
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
    task: str | None,
    colour: str,
    mask: np.ndarray,
    uncertainty: np.ndarray,
    low: np.ndarray,
    scale: tuple[float, ...],
    first: int | None = None,
    defer_secondary: bool = False,
) -> list[LayerUpdate]:
    """The pseudo-label, uncertainty and low-confidence outline layers of one prediction
    (mask last, so it ends up on top and selected; the uncertainty map glows under it).
    ``task`` None: names without the task (the Review widget's). ``defer_secondary``: the
    uncertainty and outline layers, when they exist, get their data in a turn of their own
    (``run_staged``). Each layer's role is in its metadata (``role_of``)."""
    n = names(base, task)
    return [
        LayerUpdate(
            "image",
            n["uncertainty"],
            uncertainty,
            dict(
                colormap=UNCERTAINTY_COLORMAP,
                contrast_limits=UNCERTAINTY_LIMITS,
                opacity=0.6,
                blending="additive",
                scale=scale,
                metadata={ROLE_KEY: "uncertainty"},
            ),
            first,
            deferred=defer_secondary,
        ),
        LayerUpdate(
            "labels",
            n["low"],
            low,
            dict(
                scale=scale,
                opacity=0.9,
                colormap=mask_colormap(LOW_CONFIDENCE_COLOUR),
                metadata={ROLE_KEY: "low"},
            ),
            first,
            after={"contour": 2, "editable": False},
            deferred=defer_secondary,
        ),
        LayerUpdate(
            "labels",
            n["mask"],
            mask,
            dict(
                scale=scale,
                opacity=0.5,
                colormap=mask_colormap(colour),
                metadata={ROLE_KEY: "mask"},
            ),
            first,
        ),
    ]


def run_staged(
    viewer: Any,
    updates: Iterable[LayerUpdate],
    done: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Apply ``updates``, then call ``done`` with the layers by name.

    A layer to create gets an event-loop turn of its own, and Qt paints and handles input
    between two of them, so the longest freeze is one layer's creation instead of all of
    them. Updates of existing layers are applied together, with ``done``, in one turn: one
    repaint instead of one per layer. Deferred updates of existing layers follow ``done``
    after ``DEFERRED_MS``, so that the repaint of the first turn and any input come first;
    one whose layer is gone by then (another scan is shown) is dropped.
    """
    turns, later = plan_turns(viewer, updates)
    shown: dict[str, Any] = {u.name: u.existing(viewer) for u in later}

    def step() -> None:
        for update in turns.pop(0) if turns else []:
            shown[update.name] = update.apply(viewer)
        if turns:
            QTimer.singleShot(0, step)
            return
        if done is not None:
            done(shown)
        if later:
            QTimer.singleShot(DEFERRED_MS, apply_later)

    def apply_later() -> None:
        for update in later:
            if not update.creates(viewer):
                update.apply(viewer)

    QTimer.singleShot(0, step)


DEFERRED_MS = 20  # a 0 ms timer would run before the timers and input that are due


def plan_turns(
    viewer: Any, updates: Iterable[LayerUpdate]
) -> tuple[list[list[LayerUpdate]], list[LayerUpdate]]:
    """``updates`` grouped into event-loop turns: each layer to create alone, each run of
    updates to existing layers together; the last turn also runs ``done`` (it may be empty).
    Second: the deferred updates of existing layers, for a turn after ``done``."""
    turns: list[list[LayerUpdate]] = [[]]
    later: list[LayerUpdate] = []
    for update in updates:
        if update.creates(viewer):
            turns.extend([[update], []])
        elif update.deferred:
            later.append(update)
        else:
            turns[-1].append(update)
    return [turn for turn in turns[:-1] if turn] + [turns[-1]], later


def stack(viewer: Any, names_bottom_up: Sequence[str]) -> None:
    """Put the named layers in this order, bottom to top (moved above every other layer), when
    they are not in it already: a layer created anew (a colour scan after a grey one, a cine
    after a still) lands on top, and an opaque scan there would hide the mask under review."""
    layers = viewer.layers
    present = [n for n in names_bottom_up if n in layers]
    at = [layers.index(layers[n]) for n in present]
    if at == sorted(at):
        return
    for name in present:
        layers.move(layers.index(layers[name]), len(layers))


def show_now(viewer: Any, updates: Iterable[LayerUpdate]) -> dict[str, Any]:
    """Apply ``updates`` at once (small data, tests)."""
    return {u.name: u.apply(viewer) for u in updates}
