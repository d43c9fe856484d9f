"""Click-to-fix: refine a frame's mask from the annotator's clicks, and the simulated annotator.

The frame is encoded once when a :class:`Refiner` is made; each :meth:`Refiner.refine` runs only
the light refinement head (:mod:`propl.models.refine`). Coordinates are the frame's own pixels,
``(y, x)`` = (row, column), like napari's data coordinates of a 2-D layer.

From the second click on, the refiner **zooms in** (RITM's zoom-in): it encodes once more a window
around the mask and the clicks (:func:`zoom_window`) and refines inside it at the network's full
input size, so a small structure's boundary is refined on finer features; the mask outside the
window stays as it was. The window is encoded again only when the mask or the clicks leave it.

The simulated annotator follows the field's protocol (Xu et al. 2016; RITM, SimpleClick): the
next click goes to the largest error region of the current mask, at its interior point farthest
from the region's boundary; positive for a missed region, negative for a false one.
:func:`noc` counts the clicks until a mask is good enough (NoC@85, NoC@90).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CheckpointError
from .inference import Predictor, frames_to_float
from .models.refine import click_maps
from .region import Region, crop_window, paste

MAX_CLICKS = 20
"""The field's cap on clicks per sample: one that never gets there counts 20."""
NO_REFINE = "clicks need a newer model; this checkpoint has no refinement head"
"""The error of a model from before the refinement head (the message names the model)."""
ZOOM_FROM_CLICK = 2
"""The refiner zooms in from this click on (the first click sees the whole frame)."""
ZOOM_MARGIN = 0.7
"""Each side of the zoom window lies this share of the object's height (width) beyond it."""
ZOOM_MIN_SIDE = 0.6
"""The zoom window is at least this share of the frame's (imaging region's) height and width."""
ZOOM_MAX_AREA = 0.7
"""No zoom when the window would cover more than this share of the frame's area."""


class RefineUnavailableError(CheckpointError):
    """The model has no click refinement head (a checkpoint from before it)."""


@dataclass(frozen=True)
class Click:
    """One annotator click, in the frame's pixel coordinates.

    Attributes:
        y: row (may be fractional).
        x: column.
        positive: True adds the clicked structure, False removes it.
    """

    y: float
    x: float
    positive: bool = True


Box = tuple[float, float, float, float]
"""``(y0, x0, y1, x1)`` in frame pixels, end exclusive (like slices ``[y0:y1, x0:x1]``)."""


class Refiner:
    """A frame encoded once, refined click by click.

    Args:
        predictor: a Predictor whose model has the refinement head (``model.has_refine``).
        frame: one frame ``(H, W)`` or ``(H, W, 3)``, any dtype (:func:`frames_to_float`).
        task: the task prompt to use, or None for a structure the model does not know (the
            head then relies on the clicks and the mask alone).
        region: the imaging region, as for :meth:`Predictor.predict`: the frame is encoded
            and refined on this crop, clicks and boxes are shifted into it, and the refined
            mask is zero outside it. None: the whole frame.
        zoom: zoom in from the :data:`ZOOM_FROM_CLICK`-th click (see the module's notes).

    Raises:
        RefineUnavailableError: the model has no refinement head.
        KeyError: ``task`` is not one of the model's tasks.
    """

    def __init__(
        self,
        predictor: Predictor,
        frame: np.ndarray,
        task: str | None = None,
        region: Region | None = None,
        zoom: bool = True,
    ) -> None:
        model = predictor.model
        head = getattr(model, "refine", None)
        if head is None:
            raise RefineUnavailableError(f"{NO_REFINE} ({predictor.version or 'this model'})")
        self.predictor, self.task, self._head = predictor, task, head
        self.zoom = zoom
        self._frame = frame
        self._zoomed: tuple[Region, Refiner] | None = None  # the window and its refiner
        frame = np.asarray(frame)
        if frame.ndim == 3 and frame.shape[-1] == 3:  # one RGB frame, not three grey ones
            frame = frame[None]
        x = frames_to_float(frame)
        if x.shape[0] != 1:
            raise ValueError(f"expected one frame (H, W), got {x.shape[0]} frames")
        self.shape: tuple[int, int] = (int(x.shape[1]), int(x.shape[2]))
        self.region = crop_window(region, self.shape)
        if self.region is not None:  # scaled over the whole frame first, as the Predictor does
            x = np.ascontiguousarray(x[(slice(None), *self.region.slices)])
        self._crop = (int(x.shape[1]), int(x.shape[2]))
        task_id = model.task_index(task) if task is not None else 0
        with torch.inference_mode():
            features, t = predictor.encode(torch.from_numpy(x), task_id)
            s = predictor.input_size
            image = F.interpolate(
                torch.from_numpy(x)[:, None].to(predictor.device),
                size=(s, s),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            prompt = model.prompt(t) if task is not None else None
            self._embedding = head.embed(features, image, prompt)
        self._half = (s // 2, s // 2)

    @torch.inference_mode()
    def refine(
        self,
        mask: np.ndarray | None,
        clicks: Sequence[Click],
        box: Box | None = None,
        threshold: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mask refined by the clicks.

        Args:
            mask: the current ``(H, W)`` mask (non-zero = foreground): the pseudo-label, the
                previous result, or None / all zero to start empty.
            clicks: every click so far on this frame, in order.
            box: an optional bounding box of the structure.
            threshold: probability above which a pixel is foreground.

        Returns:
            ``(mask, probability)``: ``(H, W)`` uint8 in {0, 1} and float32 in [0, 1].
        """
        if mask is not None and tuple(mask.shape) != self.shape:
            raise ValueError(f"mask must be {self.shape}, got {tuple(mask.shape)}")
        if self.zoom and len(clicks) >= ZOOM_FROM_CLICK:
            zoomed = self._zoom_refiner(mask, clicks, box)
            if zoomed is not None:
                window, refiner = zoomed
                new, prob = refiner.refine(mask, clicks, box, threshold)
                out = (
                    np.zeros(self.shape, np.uint8) if mask is None else (mask > 0).astype(np.uint8)
                )
                whole = out.astype(np.float32)
                out[window.slices], whole[window.slices] = new[window.slices], prob[window.slices]
                if self.region is not None:  # zero outside the imaging region, as unzoomed
                    outside = np.ones(self.shape, bool)
                    outside[self.region.slices] = False
                    out[outside], whole[outside] = 0, 0
                return out, whole
        oy, ox = (self.region.y0, self.region.x0) if self.region is not None else (0, 0)
        if mask is not None and self.region is not None:
            mask = np.asarray(mask)[self.region.slices]
        clicks = [Click(c.y - oy, c.x - ox, c.positive) for c in clicks]
        if box is not None:
            box = (box[0] - oy, box[1] - ox, box[2] - oy, box[3] - ox)
        prob = self._refine_crop(mask, clicks, box)
        prob_np = paste(prob[None], self.region, self.shape)[0]
        return (prob_np > threshold).astype(np.uint8), prob_np

    def _zoom_refiner(
        self, mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None
    ) -> tuple[Region, Refiner] | None:
        """The window to zoom into and its refiner (the last one while the new window fits in
        it); None when the window would cover most of the frame."""
        bounds = self.region or Region(0, 0, *self.shape)
        window = zoom_window(mask, clicks, box, bounds)
        if window is None:
            return None
        last = self._zoomed
        if last is None or not _inside(window, last[0]):
            refiner = Refiner(self.predictor, self._frame, self.task, window, zoom=False)
            self._zoomed = last = (window, refiner)
        return last

    def _refine_crop(
        self, mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None
    ) -> np.ndarray:
        """``(h, w)`` float32 probability on the crop, clicks and box in its coordinates."""
        device = self.predictor.device
        h, w = self._crop
        hh, hw = self._half
        if mask is None:
            m = torch.zeros(1, 1, hh, hw, device=device)
        else:
            m = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None, None]
            m = F.interpolate(m.to(device), size=(hh, hw), mode="area")
        sy, sx = hh / h, hw / w
        pts = [
            [(c.y + 0.5) * sy - 0.5, (c.x + 0.5) * sx - 0.5, 1.0 if c.positive else -1.0]
            for c in clicks
        ]
        points = torch.tensor(pts, dtype=torch.float32, device=device).view(1, len(pts), 3)
        boxes = None
        if box is not None:
            y0, x0, y1, x1 = box
            boxes = torch.tensor([[y0 * sy, x0 * sx, y1 * sy, x1 * sx]], device=device)
        head = self._head
        radius = head.config.click_radius * hh / self.predictor.input_size
        logits = head.decode(self._embedding, click_maps(m, points, radius, boxes))
        prob = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear"))[0, 0]
        return prob.float().cpu().numpy()


def zoom_window(
    mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None, bounds: Region
) -> Region | None:
    """The window a refiner zooms into: the box around the mask's foreground, the clicks and
    the drawn box, grown by :data:`ZOOM_MARGIN` of its size on each side and to at least
    :data:`ZOOM_MIN_SIDE` of ``bounds`` (the imaging region) a side, kept inside ``bounds``.
    None when it would cover more than :data:`ZOOM_MAX_AREA` of ``bounds``' area."""
    ys = [c.y for c in clicks] + [c.y + 1 for c in clicks]
    xs = [c.x for c in clicks] + [c.x + 1 for c in clicks]
    if mask is not None:
        rows = np.flatnonzero(np.asarray(mask)[bounds.slices].any(axis=1))
        cols = np.flatnonzero(np.asarray(mask)[bounds.slices].any(axis=0))
        if rows.size:
            ys += [bounds.y0 + rows[0], bounds.y0 + rows[-1] + 1]
            xs += [bounds.x0 + cols[0], bounds.x0 + cols[-1] + 1]
    if box is not None:
        ys += [box[0], box[2]]
        xs += [box[1], box[3]]
    if not ys:
        return None
    (by0, by1), (bx0, bx1) = ((bounds.y0, bounds.y1), (bounds.x0, bounds.x1))
    sides = []
    for lo, hi, start, end in ((min(ys), max(ys), by0, by1), (min(xs), max(xs), bx0, bx1)):
        span = end - start
        size = min(span, max((hi - lo) * (1 + 2 * ZOOM_MARGIN), ZOOM_MIN_SIDE * span))
        first = min(max((lo + hi - size) / 2, start), end - size)
        sides.append((int(math.floor(first)), int(min(end, math.ceil(first + size)))))
    (y0, y1), (x0, x1) = sides
    if (y1 - y0) * (x1 - x0) > ZOOM_MAX_AREA * (by1 - by0) * (bx1 - bx0):
        return None
    return Region(y0, x0, y1, x1)  # a window of the frame, never stored


def _inside(inner: Region, outer: Region) -> bool:
    return (
        outer.y0 <= inner.y0
        and outer.x0 <= inner.x0
        and inner.y1 <= outer.y1
        and inner.x1 <= outer.x1
    )


def largest_region(errors: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected region of a boolean map and its size (0 when none)."""
    from scipy import ndimage

    labels, n = ndimage.label(errors, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(errors), 0
    sizes = np.bincount(labels.ravel())[1:]
    k = int(np.argmax(sizes))  # ties: the first label, so runs are deterministic
    return labels == k + 1, int(sizes[k])


def next_click(pred: np.ndarray, truth: np.ndarray) -> Click | None:
    """The simulated annotator's next click, or None when the mask is already exact.

    The largest error region (false negatives and false positives labelled separately) gets
    the click, at its interior point farthest from its boundary (the frame's edge counts as
    boundary); positive for a missed region, negative for a false one.

    Args:
        pred: ``(H, W)`` current mask, non-zero = foreground.
        truth: ``(H, W)`` ground truth, non-zero = foreground.
    """
    from scipy import ndimage

    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    missed, n_missed = largest_region(t & ~p)
    false, n_false = largest_region(p & ~t)
    if n_missed == 0 and n_false == 0:
        return None
    positive = n_missed >= n_false
    region = missed if positive else false
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(float(y), float(x), positive)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    union = int((p | t).sum())
    return 1.0 if union == 0 else float((p & t).sum()) / union


def noc(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Clicks until the IoU reaches ``threshold`` (``ious[k]`` after k clicks; ``ious[0]`` is
    the start mask), ``max_clicks`` when it never does."""
    for k, value in enumerate(ious[: max_clicks + 1]):
        if value >= threshold:
            return k
    return max_clicks


def simulate(
    refine: Callable[[np.ndarray | None, Sequence[Click]], np.ndarray],
    truth: np.ndarray,
    start: np.ndarray | None = None,
    max_clicks: int = MAX_CLICKS,
    stop_at: float | None = None,
    min_clicks: int = 0,
) -> list[float]:
    """Click with the simulated annotator and return the IoU after 0, 1, ... clicks.

    Each round feeds the previous result back as the current mask (the model's own output),
    with all clicks so far.

    Args:
        refine: ``(mask, clicks) -> mask``, e.g. ``lambda m, c: refiner.refine(m, c)[0]``.
        truth: ``(H, W)`` ground truth.
        start: the start mask (the pseudo-label), or None to start empty.
        max_clicks: the cap.
        stop_at: stop once the IoU reaches this (after at least ``min_clicks`` clicks).
        min_clicks: clicks to make whatever the IoU.
    """
    mask = np.zeros(truth.shape, np.uint8) if start is None else (start > 0).astype(np.uint8)
    ious, clicks = [iou(mask, truth)], []
    for k in range(max_clicks):
        if stop_at is not None and k >= min_clicks and ious[-1] >= stop_at:
            break
        click = next_click(mask, truth)
        if click is None:
            ious.append(ious[-1])
            continue
        clicks.append(click)
        mask = refine(mask, clicks)
        ious.append(iou(mask, truth))
    return ious


def brush_pixels(start: np.ndarray | None, truth: np.ndarray, threshold: float) -> int:
    """The fewest pixels an annotator must repaint in ``start`` to reach IoU ``threshold``.

    Fixing a missed pixel never raises the IoU less than removing a false one, so the fewest
    repaints fix missed pixels first, then false ones (closed form, no search).
    """
    t = np.asarray(truth) > 0
    p = np.zeros_like(t) if start is None else np.asarray(start) > 0
    tp, fn, fp = int((p & t).sum()), int((t & ~p).sum()), int((p & ~t).sum())
    union = tp + fn + fp
    if union == 0 or tp >= threshold * union:
        return 0
    need_fn = math.ceil(threshold * union - tp - 1e-9)
    if need_fn <= fn:
        return need_fn
    return fn + math.ceil(union - (tp + fn) / threshold - 1e-9)
