"""Clicks, boxes and propagation on the scan under review: the rules, without a GUI.

A :class:`ScanInteraction` belongs to one open scan. Each frame is encoded once, the first time
it is clicked (:class:`~propl.interactive.Refiner`); every click then runs only the light
refinement head, starting from the frame's current mask (which may hold brush edits: clicks
and the brush mix). :meth:`ScanInteraction.undo` takes back the last click or box of a frame
(the mask returns to what it was before it). :meth:`ScanInteraction.propagate` carries a frame's
mask through the cine (:mod:`propl.propagation`). What was done is counted for the review's
provenance (:meth:`ScanInteraction.provenance`). Thread-safe: a view may run clicks in a worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference import Predictor
from ..interactive import Box, Click, Refiner
from ..propagation import DEFAULT_STOP_BELOW, Propagation, propagate
from ..region import Region


@dataclass
class _FrameState:
    refiner: Refiner
    clicks: list[Click] = field(default_factory=list)
    box: Box | None = None
    undo: list[tuple[np.ndarray, list[Click], Box | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Refined:
    """One frame after a click: its new mask, its uncertainty (``1 - |2p - 1|``) and
    probability, and the clicks in force."""

    frame: int
    mask: np.ndarray
    uncertainty: np.ndarray
    probability: np.ndarray
    clicks: tuple[Click, ...]
    box: Box | None


class ScanInteraction:
    """Clicks and propagation on one scan's frames.

    Args:
        predictor: a Predictor whose model has the refinement head (else the first click
            raises :class:`~propl.interactive.RefineUnavailableError`).
        frames: the scan's frames ``(F, H, W)`` or ``(F, H, W, 3)``.
        task: the task prompt (None for a structure the model does not know).
        region: the scan's imaging region (``Scan.region``): clicks and propagation work on
            the crop its prediction was made on. None: the whole frame.
    """

    def __init__(
        self,
        predictor: Predictor,
        frames: np.ndarray,
        task: str | None,
        region: Region | None = None,
    ) -> None:
        self.predictor, self.frames, self.task, self.region = predictor, frames, task, region
        self._frames: dict[int, _FrameState] = {}
        self._lock = threading.RLock()
        self._counts = {"clicks": 0, "boxes": 0, "undone": 0, "propagated_frames": 0}

    def _state(self, frame: int) -> _FrameState:
        with self._lock:
            if frame not in self._frames:
                refiner = Refiner(self.predictor, self.frames[frame], self.task, self.region)
                self._frames[frame] = _FrameState(refiner)
            return self._frames[frame]

    def click(
        self, frame: int, mask: np.ndarray, click: Click | None = None, box: Box | None = None
    ) -> Refined:
        """Add a click (and/or set the frame's box) and refine the frame's current ``mask``.

        Args:
            frame: the frame index.
            mask: the frame's ``(H, W)`` mask as shown now (brush edits included).
            click: the new click (positive adds, negative removes), or None with a box.
            box: a box around the structure, replacing the frame's previous box.
        """
        if click is None and box is None:
            raise ValueError("a click or a box is needed")
        state = self._state(frame)
        with self._lock:
            state.undo.append((np.array(mask, np.uint8), list(state.clicks), state.box))
            if click is not None:
                state.clicks.append(click)
                self._counts["clicks"] += 1
            if box is not None:
                state.box = box
                self._counts["boxes"] += 1
            clicks, current_box = list(state.clicks), state.box
        new, prob = state.refiner.refine(mask, clicks, current_box)
        return Refined(frame, new, 1 - np.abs(2 * prob - 1), prob, tuple(clicks), current_box)

    def undo(self, frame: int) -> np.ndarray | None:
        """Take back the frame's last click or box: the mask it had before (None: nothing to
        take back)."""
        with self._lock:
            state = self._frames.get(frame)
            if state is None or not state.undo:
                return None
            mask, state.clicks, state.box = state.undo.pop()
            self._counts["undone"] += 1
            return mask

    def clicks(self, frame: int) -> tuple[Click, ...]:
        with self._lock:
            state = self._frames.get(frame)
            return () if state is None else tuple(state.clicks)

    def propagate(
        self,
        masks: np.ndarray,
        frame: int,
        *,
        direction: str = "both",
        stop_below: float = DEFAULT_STOP_BELOW,
        should_stop: Callable[[], bool] = lambda: False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Propagation:
        """Carry ``masks[frame]`` through the cine (see :func:`propl.propagation.propagate`);
        the frames it reaches become drafts once the view stores them."""
        result = propagate(
            self.predictor,
            self.frames,
            self.task,
            frame,
            masks,
            direction=direction,
            stop_below=stop_below,
            should_stop=should_stop,
            progress=progress,
            region=self.region,
        )
        with self._lock:
            self._counts["propagated_frames"] += len(result.reached)
        return result

    def provenance(self) -> dict[str, Any]:
        """What was done on this scan, for the review's provenance (counts, and the clicks
        in force per frame as ``[y, x, positive]``)."""
        with self._lock:
            return {
                **self._counts,
                "frames": {
                    str(f): [[round(c.y, 1), round(c.x, 1), c.positive] for c in s.clicks]
                    for f, s in sorted(self._frames.items())
                    if s.clicks
                },
            }
