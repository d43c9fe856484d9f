"""The project store (zarr v3): the only code that reads or writes a project folder."""

from .integrity import DamagedError
from .lock import StoreLockedError, current_user
from .project import LABELLED, STATUSES, Project, StoreError, file_sha256
from .records import QueueItem, Review, Scan, StoredPrediction

__all__ = [
    "LABELLED",
    "DamagedError",
    "STATUSES",
    "Project",
    "QueueItem",
    "Review",
    "Scan",
    "StoreError",
    "StoreLockedError",
    "StoredPrediction",
    "current_user",
    "file_sha256",
]
