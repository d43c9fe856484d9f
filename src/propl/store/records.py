"""What the store hands out: plain, immutable records (the arrays are copies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..region import Region
from .review_state import labelled_frames


@dataclass(frozen=True)
class Scan:
    """What the store knows about one imported scan (everything but its pixels)."""

    id: str
    name: str
    shape: tuple[int, ...]
    source: str | None = None
    sha256: str = ""
    spacing_mm: tuple[float, float] | None = None
    frame_time_ms: float | None = None
    modality: str | None = None
    is_color: bool = False
    header: dict[str, Any] | None = None
    imported: float = 0.0
    burned_in_annotation: bool = False
    """The source says its pixels carry burned-in text (which may identify the patient)."""
    region: Region | None = None
    """The imaging region the network segments (:mod:`propl.region`); None: the whole frame
    (also every scan of a project from before regions were stored)."""

    @property
    def n_frames(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class StoredPrediction:
    """The current prediction of one task on one scan."""

    mask: np.ndarray  # (F, H, W) uint8
    uncertainty: np.ndarray  # (F, H, W) float16
    confidence: np.ndarray  # (F,) float
    model_version: str
    time: float
    task_fit: np.ndarray | None = None  # (F,) float; None: the model had no statistics
    shape_fit: np.ndarray | None = None  # (F,) float; None: the model had no shape floor

    @property
    def scan_confidence(self) -> float:
        return float(np.mean(self.confidence))


@dataclass(frozen=True)
class Review:
    """The current review of one task on one scan, with its provenance."""

    status: str
    author: str
    time: float
    model_version: str | None
    edited_pixels: int
    seconds: float
    reason: str
    revision: str
    mask: np.ndarray | None = None
    frames: tuple[str, ...] = ()
    """The state of each frame (:mod:`propl.store.review_state`): only ``accepted`` and
    ``corrected`` frames are training labels."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How the mask was made (e.g. clicks and their count); empty for brush edits."""

    @property
    def labelled_frames(self) -> np.ndarray:
        """Indices of the frames the annotator confirmed (the training labels)."""
        return labelled_frames(self.frames)

    @property
    def is_labelled(self) -> bool:
        return len(self.labelled_frames) > 0


@dataclass(frozen=True)
class QueueItem:
    scan_id: str
    name: str
    confidence: float | None  # None: not predicted yet
    status: str  # "unreviewed", "damaged" or one of STATUSES
    detail: str = ""  # e.g. "3 of 30 frames labelled", or what is damaged
