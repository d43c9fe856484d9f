"""What a review means, frame by frame: the rules that decide what becomes a training label.

Every edit is stored at once as a **draft** (so nothing the annotator did is ever lost), but a
frame becomes a label only when the annotator confirms it: **accepted** (confirmed as the
model drew it) or **corrected** (confirmed after editing). A still is one frame; a cine keeps
one state per frame, so confirming the frames one looked at labels those frames only.

Frame states: ``unreviewed``, ``draft``, ``accepted``, ``corrected``, ``rejected``, ``skipped``.
A scan's status sums its frames up (:func:`scan_status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIRMED = ("accepted", "corrected")
"""Statuses that make frames training labels."""
STATUSES = ("draft", *CONFIRMED, "rejected", "skipped")
"""What a save can say: a draft (any edit, autosaved), a confirmation, or a refusal."""
LABELLED = CONFIRMED
"""Scan statuses whose review holds at least one labelled frame."""
FRAME_STATES = ("unreviewed", *STATUSES)
NOT_DONE = ("unreviewed", "draft", "damaged")
"""Queue statuses of scans still waiting for a decision (drafts stay in the queue)."""


def frame_states(
    status: str,
    mask: np.ndarray | None,
    prediction: np.ndarray,
    previous_mask: np.ndarray | None,
    previous_states: Sequence[str] | None,
    confirm: Sequence[int] | None = None,
) -> list[str]:
    """The state of each frame after a save.

    Args:
        status: what the save says (one of :data:`STATUSES`).
        mask: the saved ``(F, H, W)`` mask (None for rejected/skipped).
        prediction: the model's ``(F, H, W)`` mask the edits are counted against.
        previous_mask: the mask of the review this save replaces (None: there is none).
        previous_states: that review's frame states (None: there is none).
        confirm: for a confirmation, the frames it confirms (None: every frame); the other
            frames keep their state unless this save changed them (then they are drafts).

    Returns:
        One of :data:`FRAME_STATES` per frame.
    """
    n = prediction.shape[0]
    if status in ("rejected", "skipped"):
        return [status] * n
    assert mask is not None
    states = list(previous_states) if previous_states is not None else ["unreviewed"] * n
    states = ["unreviewed" if s in ("rejected", "skipped") else s for s in states]
    before = previous_mask if previous_mask is not None else prediction
    confirmed = set(range(n)) if confirm is None else {int(f) for f in confirm}
    for f in range(n):
        edited = not np.array_equal(mask[f] > 0, prediction[f] > 0)
        if status in CONFIRMED and f in confirmed:
            states[f] = "corrected" if edited else "accepted"
        elif not np.array_equal(mask[f] > 0, before[f] > 0):
            # changed but not confirmed: a draft (or back to the model's own mask)
            states[f] = "draft" if edited else "unreviewed"
    return states


def scan_status(states: Sequence[str]) -> str:
    """A scan's status from its frames: corrected or accepted when any frame is labelled
    (corrected first), rejected/skipped when every frame says so, else a draft."""
    for status in ("corrected", "accepted"):
        if status in states:
            return status
    for status in ("rejected", "skipped"):
        if states and all(s == status for s in states):
            return status
    return "draft"


def labelled_frames(states: Sequence[str]) -> np.ndarray:
    """Indices of the frames that are training labels."""
    return np.array([i for i, s in enumerate(states) if s in CONFIRMED], np.int64)


def describe(states: Sequence[str]) -> str:
    """A short summary for lists, e.g. "corrected (3 of 30 frames labelled, 1 draft)"."""
    status = scan_status(states)
    if len(states) < 2:
        return status
    n_lab, n_draft = len(labelled_frames(states)), sum(s == "draft" for s in states)
    parts = []
    if status not in ("rejected", "skipped"):
        parts.append(f"{n_lab} of {len(states)} frames labelled")
    if n_draft:
        parts.append(f"{n_draft} draft")
    return f"{status} ({', '.join(parts)})" if parts else status


def edited_frames(
    mask: np.ndarray, previous_mask: np.ndarray | None, previous_states: Sequence[str] | None
) -> set[int]:
    """Frames changed against the stored mask, and frames still drafts: what a confirmation
    of a cine confirms besides the frame on screen."""
    changed = set()
    if previous_mask is not None and previous_mask.shape == mask.shape:
        diff = (mask > 0) != (previous_mask > 0)
        changed = {int(f) for f in np.flatnonzero(diff.reshape(len(mask), -1).any(axis=1))}
    drafts = {i for i, s in enumerate(previous_states or ()) if s == "draft"}
    return changed | drafts


def frames_to_confirm(
    project: Any, scan_id: str, task: str, mask: np.ndarray, shown_frame: int
) -> list[int]:
    """The frames a confirmation of a cine labels: the one on screen and every edited one
    (against the stored review, or the prediction when there is none)."""
    previous = project.review(scan_id, task)
    if previous is not None and previous.mask is not None:
        before, states = previous.mask, previous.frames
    else:
        prediction = project.prediction(scan_id, task)
        before, states = (prediction.mask if prediction is not None else None), None
    return sorted(edited_frames(mask, before, states) | {int(shown_frame)})
