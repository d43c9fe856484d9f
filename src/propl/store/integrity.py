"""Checksums of what the store wrote, verified on every read, and the damage they reveal.

Every array the store writes (a scan's image, a prediction's mask and uncertainty, a review's
mask) carries, in its group's attributes, its shape, dtype and one digest per frame. A read
compares what it decoded with them, so a deleted or truncated chunk, an edited ``zarr.json``
or a bit flip is reported as :class:`DamagedError` (naming the scan and the file) instead of
being read as valid data: zarr itself reads a missing chunk as zeros.

Groups written before checksums existed have none; they are read unverified.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

CHECKSUMS = "checksums"
"""The group attribute holding ``{array name: {shape, dtype, frames: [digest, ...]}}``."""


class StoreError(ValueError):
    """The folder is not a usable project, or a request does not fit it; names the folder."""


class DamagedError(StoreError):
    """Part of a project is damaged: unreadable, missing, or not what was written.

    Attributes:
        scan_id: the damaged scan (None for project-wide damage).
        file: the file or folder found damaged, relative to the project.
    """

    def __init__(self, root: Path, scan_id: str | None, file: str, reason: str) -> None:
        where = f"scan {scan_id}" if scan_id else "the project"
        super().__init__(f"project '{root}': {where} is damaged: {file}: {reason}")
        self.scan_id = scan_id
        self.file = file
        self.reason = reason


def frame_digest(frame: np.ndarray) -> str:
    """A short digest of one frame's pixels (BLAKE2b, 128 bits: a check, not a signature)."""
    return hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).hexdigest()


def array_record(array: np.ndarray) -> dict[str, Any]:
    """What :func:`verify` needs to check a later read of ``array`` (one digest per frame)."""
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "frames": [frame_digest(f) for f in array],
    }


def checksums(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: array_record(a) for name, a in arrays.items()}


def verify(
    data: np.ndarray,
    record: dict[str, Any] | None,
    frames: np.ndarray | None = None,
) -> str | None:
    """Why ``data`` is not what was written (None when it is, or nothing was recorded).

    Args:
        data: what was read: the whole array, or the frames at ``frames``.
        record: the array's entry in the group's checksums (None: written unverified).
        frames: the frame indices ``data`` holds (None: all of them).
    """
    if record is None:
        return None
    try:
        shape, dtype, digests = tuple(record["shape"]), str(record["dtype"]), record["frames"]
    except (KeyError, TypeError):
        return "its checksum record is damaged"
    wanted = shape if frames is None else (len(frames), *shape[1:])
    if data.shape != wanted or str(data.dtype) != dtype:
        return f"read {data.shape} {data.dtype}, but {wanted} {dtype} was written"
    indices = range(shape[0]) if frames is None else (int(i) for i in frames)
    for k, i in enumerate(indices):
        if not 0 <= i < len(digests) or frame_digest(data[k]) != digests[i]:
            return f"frame {i} differs from what was written (a chunk is missing or altered)"
    return None
