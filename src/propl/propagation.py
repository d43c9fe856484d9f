"""Carry a fixed frame's mask through a cine, frame by frame, until the model is unsure.

From a frame the annotator fixed, each neighbour is segmented by the refinement head
(:class:`~propl.interactive.Refiner`) with the previous frame's mask as its start mask and no
clicks, forward and backward. Propagation stops in a direction at the first frame whose
confidence falls below the threshold: that frame keeps its mask, and is where the annotator
looks next (fix it, propagate again). Frames reached by propagation are drafts until the
annotator confirms them (:mod:`propl.store.review_state`).

The confidence of a propagated frame is the expected Dice of its mask under its own
probabilities (:func:`~propl.uncertainty.confidence_score` with the probabilities as belief):
it falls where the head is unsure of the structure's extent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .inference import Predictor
from .interactive import Refiner
from .region import Region
from .uncertainty import confidence_score

DIRECTIONS = ("forward", "backward", "both")
DEFAULT_STOP_BELOW = 0.8
"""Propagation stops at the first frame whose confidence is below this."""


@dataclass
class Propagation:
    """What :func:`propagate` did.

    Attributes:
        masks: ``(F, H, W)`` uint8: the input masks with the reached frames replaced.
        reached: the frames given a propagated mask, in the order they were reached.
        confidence: ``(F,)`` float32, the reached frames' confidence (NaN elsewhere).
        stopped_at: per direction, the first frame below the threshold (its mask is left as
            it was), or None when propagation ran to the end of the cine (or was cancelled).
    """

    masks: np.ndarray
    reached: list[int] = field(default_factory=list)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stopped_at: dict[str, int | None] = field(default_factory=dict)


def _frame_confidence(prob: np.ndarray) -> float:
    p = torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None, None]
    return float(confidence_score(p, p)[0])


def _order(start: int, n: int, direction: str) -> Iterator[tuple[str, range]]:
    if direction in ("forward", "both"):
        yield "forward", range(start + 1, n)
    if direction in ("backward", "both"):
        yield "backward", range(start - 1, -1, -1)


def propagate(
    predictor: Predictor,
    frames: np.ndarray,
    task: str | None,
    start: int,
    masks: np.ndarray,
    *,
    direction: str = "both",
    stop_below: float = DEFAULT_STOP_BELOW,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int], None] | None = None,
    region: Region | None = None,
) -> Propagation:
    """Propagate ``masks[start]`` through ``frames``.

    Args:
        predictor: a Predictor whose model has the refinement head.
        frames: the cine ``(F, H, W)`` or ``(F, H, W, 3)``.
        task: the task prompt (None: a structure the model does not know).
        start: the fixed frame.
        masks: ``(F, H, W)``: the current masks (the start frame's is propagated).
        direction: "forward", "backward" or "both".
        stop_below: stop at the first frame whose confidence is below this.
        should_stop: polled before each frame (a Cancel button); what was reached is kept.
        progress: called with (frames done, frames at most) after each frame.
        region: the imaging region: each frame is refined on this crop, as predictions are
            (:class:`~propl.interactive.Refiner`). None: the whole frame.

    Raises:
        RefineUnavailableError: the model has no refinement head (clicks and propagation
            need a newer model).
        ValueError: a bad direction, start frame or mask shape.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    n = len(frames)
    if not 0 <= start < n:
        raise ValueError(f"start frame {start} is outside the cine's {n} frames")
    if masks.shape != (n, *frames.shape[1:3]):
        raise ValueError(f"masks {masks.shape} do not fit the frames {frames.shape[:3]}")
    out = Propagation(
        masks=np.array(masks, np.uint8, copy=True),
        confidence=np.full(n, np.nan, np.float32),
    )
    todo = sum(len(r) for _, r in _order(start, n, direction))
    for name, frames_in_order in _order(start, n, direction):
        out.stopped_at[name] = None
        previous = out.masks[start]
        for f in frames_in_order:
            if should_stop():
                return out
            mask, prob = Refiner(predictor, frames[f], task, region=region).refine(previous, [])
            conf = _frame_confidence(prob)
            if progress is not None:
                progress(len(out.reached) + 1, todo)
            if conf < stop_below:
                out.stopped_at[name] = f
                break
            out.masks[f], out.confidence[f] = mask, conf
            out.reached.append(f)
            previous = mask
    return out
