"""The project store: scans, predictions, reviewed masks and their provenance in one zarr v3 folder.

Layout (see docs/architecture in the repository)::

    project.zarr/
      zarr.json                          attrs: schema, created, app version, tasks
      scans/<scan_id>/                   attrs: name, source, sha256, spacing, header, ...
        image                            (F, H, W) or (F, H, W, 3), one chunk per frame
        pred/<task>/rNNNNNN/             mask uint8, uncertainty float16; attrs: model version,
                                         per-frame confidence
        labels/<task>/rNNNNNN/           mask uint8 (none for rejected/skipped); attrs: status,
                                         author, time, model version, edited pixels, seconds
      models/                            model versions (written by retraining)
      .lock                              the writer lock (names its owner)

Every write is crash-safe (see :mod:`propl.store.revisions`): a new scan is built in a staging
folder and renamed into ``scans/``; predictions and labels are revisions behind a pointer. Only
one process writes at a time (:mod:`propl.store.lock`); any number may read.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .. import __version__
from ..tasks import DEFAULT_TASKS, Task
from . import revisions as rev
from . import versions as ver
from .lock import ProjectLock, current_user
from .records import QueueItem, Review, Scan, StoredPrediction

SCHEMA_VERSION = 1
STATUSES = ("accepted", "corrected", "rejected", "skipped")
"""Review outcomes: accepted and corrected carry a mask (training labels); the others do not."""
LABELLED = ("accepted", "corrected")


class StoreError(ValueError):
    """The folder is not a usable project, or a request does not fit it; names the folder."""


def content_sha256(frames: np.ndarray) -> str:
    """Hash of the pixels (shape and dtype included), for scans that come without a file."""
    h = hashlib.sha256(f"{frames.shape}{frames.dtype}".encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _attrs(node: Any) -> dict[str, Any]:
    """A zarr node's attributes as a plain dict (zarr types them as JSON unions)."""
    return dict(node.attrs)


def _read(group: Any, name: str) -> np.ndarray:
    return np.asarray(group[name][...])


def _task_from_dict(d: dict[str, Any]) -> Task:
    return Task(**{k: d[k] for k in ("id", "organ", "target", "prompt", "colour") if k in d})


class Project:
    """An open project folder. Use :meth:`create` or :meth:`open`; close it (or use ``with``).

    Methods are thread-safe within one process (writes are serialised).
    """

    def __init__(self, root: Path, read_only: bool) -> None:
        self.root = root
        self.read_only = read_only
        self._lock = ProjectLock(root)
        self._mutex = threading.RLock()
        if not read_only:
            self._lock.acquire()
            rev.clean_staging(root)
            ver.clean_stale_staging(root)
        self._store = LocalStore(root, read_only=read_only)
        self._root_group = zarr.open_group(self._store, mode="r" if read_only else "r+")

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, tasks: Sequence[Task] | None = None) -> Project:
        """Create an empty project at ``path`` (which must not exist, or be an empty folder).

        Raises:
            StoreError: ``path`` is a file or a non-empty folder.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"cannot create a project at '{path}': it exists and is not empty")
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.parent / f".{path.name}.{uuid.uuid4().hex}.creating"
        attrs: dict[str, Any] = {
            "propl_schema": SCHEMA_VERSION,
            "created": time.time(),
            "app": f"napari-propl {__version__}",
            "tasks": [asdict(t) for t in (tasks if tasks is not None else DEFAULT_TASKS)],
        }
        group = zarr.open_group(LocalStore(staged), mode="w", attributes=attrs)
        group.create_group("scans")
        group.create_group("models")
        if path.exists():
            path.rmdir()
        os.rename(staged, path)
        rev.fsync_dir(path.parent)
        return cls(path, read_only=False)

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> Project:
        """Open an existing project; for writing unless ``read_only``.

        Raises:
            StoreError: not a project, or written by a newer napari-propl.
            StoreLockedError: another process has it open for writing.
        """
        path = Path(path)
        meta = path / "zarr.json"
        if not meta.is_file():
            raise StoreError(f"'{path}' is not a napari-propl project (no zarr.json)")
        try:
            attrs = _attrs(zarr.open_group(LocalStore(path, read_only=True), mode="r"))
            schema = attrs.get("propl_schema")
        except Exception as exc:  # zarr raises several types for broken metadata
            raise StoreError(f"'{path}' is not a readable zarr store ({exc})") from exc
        if schema is None:
            raise StoreError(f"'{path}' is a zarr store but not a napari-propl project")
        if int(schema) > SCHEMA_VERSION:
            raise StoreError(
                f"'{path}' was written by a newer napari-propl (schema {schema}); "
                "upgrade napari-propl to open it"
            )
        return cls(path, read_only=read_only)

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"project '{self.root}' is open read-only")

    # -- tasks ---------------------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        return [_task_from_dict(d) for d in _attrs(self._root_group).get("tasks", [])]

    def add_task(self, task: Task) -> None:
        """Register a new task (its id must be new)."""
        self._writable()
        with self._mutex:
            if task.id in {t.id for t in self.tasks}:
                raise StoreError(f"project '{self.root}' already has a task {task.id!r}")
            tasks = [asdict(t) for t in self.tasks] + [asdict(task)]
            self._root_group.attrs.update({"tasks": tasks})

    def _task(self, task: str) -> str:
        if task not in {t.id for t in self.tasks}:
            known = ", ".join(t.id for t in self.tasks)
            raise StoreError(f"project '{self.root}' has no task {task!r} (it has: {known})")
        return task

    # -- scans ---------------------------------------------------------------------------

    def scan_ids(self) -> list[str]:
        """Scan ids in import order."""
        scans = self.root / "scans"
        ids = [p.name for p in scans.iterdir() if (p / "zarr.json").is_file()]
        return sorted(ids, key=lambda i: (self.scan(i).imported, i))

    def scan(self, scan_id: str) -> Scan:
        try:
            d = _attrs(zarr.open_group(self._store, path=f"scans/{scan_id}", mode="r"))
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"project '{self.root}' has no scan {scan_id!r}") from exc
        spacing = d.get("spacing_mm")
        return Scan(
            id=scan_id,
            name=d["name"],
            shape=tuple(d["shape"]),
            source=d.get("source"),
            sha256=d.get("sha256", ""),
            spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
            frame_time_ms=d.get("frame_time_ms"),
            modality=d.get("modality"),
            is_color=bool(d.get("is_color", False)),
            header=d.get("header"),
            imported=float(d.get("imported", 0.0)),
        )

    def image(self, scan_id: str, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The scan's frames as stored: ``(F, H, W)`` or ``(F, H, W, 3)``; only the frames at
        ``frames`` (sorted indices) when given, read chunk by chunk."""
        self.scan(scan_id)
        array = zarr.open_array(self._store, path=f"scans/{scan_id}/image", mode="r")
        if frames is None:
            return np.asarray(array[:])
        return np.asarray(array.get_orthogonal_selection((np.asarray(frames, dtype=np.intp),)))

    def add_scan(
        self,
        frames: np.ndarray,
        name: str,
        *,
        source: str | Path | None = None,
        sha256: str | None = None,
        spacing_mm: tuple[float, float] | None = None,
        frame_time_ms: float | None = None,
        modality: str | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        """Import frames; returns the scan id. Importing the same content again returns the
        existing id (the hash of the source file, or of the pixels, identifies a scan).

        Args:
            frames: ``(H, W)``, ``(F, H, W)`` or ``(F, H, W, 3)`` uint8/uint16 as acquired.
        """
        self._writable()
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        is_color = frames.ndim == 4 and frames.shape[-1] == 3
        if not (frames.ndim == 3 or is_color) or 0 in frames.shape:
            raise StoreError(f"cannot import {name!r}: frames of shape {frames.shape}")
        sha = sha256 or content_sha256(frames)
        with self._mutex:
            scan_id = sha[:16]  # the id is the content hash: the same scan maps to one folder
            if (self.root / "scans" / scan_id / "zarr.json").is_file():
                return scan_id
            attrs: dict[str, Any] = {
                "name": name,
                "shape": list(frames.shape),
                "source": str(source) if source is not None else None,
                "sha256": sha,
                "spacing_mm": list(spacing_mm) if spacing_mm else None,
                "frame_time_ms": frame_time_ms,
                "modality": modality,
                "is_color": is_color,
                "header": header or {},
                "imported": time.time(),
            }
            staged = rev.stage_group(self.root, {"image": frames}, attrs)
            os.rename(staged, self.root / "scans" / scan_id)  # the scan appears whole or not
            rev.fsync_dir(self.root / "scans")
            return scan_id

    def add_file(self, path: str | Path, *, keep_phi: bool = False) -> str:
        """Read a scan file and import it (DICOM headers de-identified unless ``keep_phi``).

        Raises:
            ReaderError: the file cannot be read (the message names it).
        """
        from ..data.readers import read_scan

        path = Path(path)
        frames, meta = read_scan(path, keep_phi=keep_phi)
        return self.add_scan(
            frames,
            path.stem,
            source=path.resolve(),
            sha256=file_sha256(path),
            spacing_mm=meta.spacing_mm,
            frame_time_ms=meta.frame_time_ms,
            modality=meta.modality,
            header=meta.header,
        )

    # -- predictions -----------------------------------------------------------------------

    def save_prediction(
        self,
        scan_id: str,
        task: str,
        mask: np.ndarray,
        uncertainty: np.ndarray,
        confidence: np.ndarray,
        model_version: str,
    ) -> None:
        """Store a task's prediction for a scan, replacing the previous one."""
        self._writable()
        shape = self._frame_shape(scan_id)
        for what, a in (("mask", mask), ("uncertainty", uncertainty)):
            if a.shape != shape:
                raise StoreError(f"{what} of shape {a.shape} does not fit scan {scan_id} {shape}")
        if np.asarray(confidence).shape != (shape[0],):
            raise StoreError(f"need one confidence per frame ({shape[0]}) for scan {scan_id}")
        arrays: dict[str, np.ndarray] = {
            "mask": np.asarray(mask, np.uint8),
            "uncertainty": np.asarray(uncertainty, np.float16),
        }
        attrs: dict[str, Any] = {
            "model_version": model_version,
            "time": time.time(),
            "confidence": [float(c) for c in np.asarray(confidence)],
        }
        with self._mutex:
            rev.commit(self.root, self._store, self._slot(scan_id, "pred", task), arrays, attrs, 1)

    def prediction(self, scan_id: str, task: str) -> StoredPrediction | None:
        group = self._current(scan_id, "pred", task)
        if group is None:
            return None
        attrs = _attrs(group)
        return StoredPrediction(
            mask=_read(group, "mask"),
            uncertainty=_read(group, "uncertainty"),
            confidence=np.asarray(attrs["confidence"], np.float32),
            model_version=str(attrs["model_version"]),
            time=float(attrs["time"]),
        )

    def prediction_confidence(self, scan_id: str, task: str) -> float | None:
        """Mean per-frame confidence of the current prediction (without reading masks)."""
        group = self._current(scan_id, "pred", task)
        return None if group is None else float(np.mean(_attrs(group)["confidence"]))

    # -- reviews ---------------------------------------------------------------------------

    def save_review(
        self,
        scan_id: str,
        task: str,
        status: str,
        mask: np.ndarray | None = None,
        *,
        author: str | None = None,
        seconds: float = 0.0,
        reason: str = "",
        model_version: str | None = None,
    ) -> Review:
        """Record a review; when this returns, it survives any crash.

        ``accepted`` without a mask stores the current prediction as the label; ``corrected``
        needs the edited mask; ``rejected``/``skipped`` store no mask (give a reason).
        Edited pixels are counted against the current prediction.
        """
        self._writable()
        self._task(task)
        if status not in STATUSES:
            raise StoreError(f"unknown review status {status!r}; choose one of {STATUSES}")
        shape = self._frame_shape(scan_id)
        pred = self.prediction(scan_id, task)
        if status == "accepted" and mask is None:
            if pred is None:
                raise StoreError(f"cannot accept scan {scan_id}: it has no {task} prediction")
            mask = pred.mask
        if status == "corrected" and mask is None:
            raise StoreError("a correction needs the corrected mask")
        arrays: dict[str, np.ndarray] = {}
        edited = 0
        if status in LABELLED:
            assert mask is not None
            mask = np.asarray(mask)
            if mask.shape != shape:
                raise StoreError(f"mask of shape {mask.shape} does not fit scan {scan_id} {shape}")
            arrays["mask"] = (mask > 0).astype(np.uint8)
            base = pred.mask if pred is not None else np.zeros(shape, np.uint8)
            edited = int(np.count_nonzero(arrays["mask"] != (base > 0)))
        attrs: dict[str, Any] = {
            "status": status,
            "author": author or current_user(),
            "time": time.time(),
            "model_version": model_version or (pred.model_version if pred else None),
            "edited_pixels": edited,
            "seconds": float(seconds),
            "reason": reason,
        }
        with self._mutex:
            name = rev.commit(
                self.root, self._store, self._slot(scan_id, "labels", task), arrays, attrs
            )
        return Review(**attrs, revision=name, mask=arrays.get("mask"))

    def review(self, scan_id: str, task: str, with_mask: bool = True) -> Review | None:
        group = self._current(scan_id, "labels", task)
        if group is None:
            return None
        a = _attrs(group)
        mask = _read(group, "mask") if with_mask and "mask" in group else None
        slot = self._slot(scan_id, "labels", task)
        return Review(
            status=a["status"],
            author=a["author"],
            time=float(a["time"]),
            model_version=a.get("model_version"),
            edited_pixels=int(a["edited_pixels"]),
            seconds=float(a["seconds"]),
            reason=a.get("reason", ""),
            revision=str(rev.current(self._store, slot)),
            mask=mask,
        )

    def review_history(self, scan_id: str, task: str) -> list[str]:
        """Revision names of a scan's reviews, oldest first (every save is kept)."""
        return rev.revisions(self.root / self._slot(scan_id, "labels", task))

    def queue(self, task: str, include_reviewed: bool = False) -> list[QueueItem]:
        """Scans for review: least confident first, unpredicted last, unreviewed only by default."""
        self._task(task)
        items = []
        for scan_id in self.scan_ids():
            review = self.review(scan_id, task, with_mask=False)
            status = review.status if review else "unreviewed"
            if review is not None and not include_reviewed:
                continue
            conf = self.prediction_confidence(scan_id, task)
            items.append(QueueItem(scan_id, self.scan(scan_id).name, conf, status))
        return sorted(items, key=lambda q: (q.confidence is None, q.confidence or 0.0))

    def progress(self, task: str) -> tuple[int, int]:
        """(reviewed, total) scans for a task."""
        ids = self.scan_ids()
        done = sum(self.review(i, task, with_mask=False) is not None for i in ids)
        return done, len(ids)

    # -- model versions --------------------------------------------------------------------

    def versions(self) -> list[ver.ModelVersion]:
        """Every model version of the project (failed ones included), oldest first."""
        return [ver.read_version(self.root, n) for n in ver.version_names(self.root)]

    def version(self, name: str) -> ver.ModelVersion:
        if name not in ver.version_names(self.root):
            raise StoreError(f"project '{self.root}' has no model version {name!r}")
        return ver.read_version(self.root, name)

    def current_version(self) -> ver.ModelVersion | None:
        """The version predictions should come from; None means the shipped model."""
        name = self._models_attrs().get("current")
        return self.version(str(name)) if name else None

    def current_model_path(self) -> Path | None:
        """The current version's checkpoint folder, or None for the shipped model."""
        current = self.current_version()
        return None if current is None else current.path

    def model_history(self) -> list[dict[str, Any]]:
        """Every switch of the current version: ``{version, time, author, reason}``."""
        return list(self._models_attrs().get("history", []))

    def set_current(self, name: str | None, reason: str = "") -> None:
        """Make a version current (``None`` or "shipped": the shipped model again).

        Promotion after a better run, or a rollback; one atomic pointer switch, recorded.

        Raises:
            StoreError: unknown version, or a failed one (its weights are never used).
        """
        self._writable()
        if name == ver.SHIPPED:
            name = None
        if name is not None:
            version = self.version(name)
            if not version.usable:
                why = version.message or "no weights"
                raise StoreError(
                    f"model version {name} of '{self.root}' failed ({why}); "
                    "it cannot become current"
                )
        with self._mutex:
            group = zarr.open_group(self._store, path=ver.MODELS, mode="a")
            entry = {
                "version": name or ver.SHIPPED,
                "time": time.time(),
                "author": current_user(),
                "reason": reason,
            }
            history = list(_attrs(group).get("history", [])) + [entry]
            group.attrs.update({"current": name, "history": history})

    def import_model(self, source: str | Path, make_current: bool = True) -> ver.ModelVersion:
        """Add a checkpoint from outside the project (e.g. a lab's own model) as a new
        ``imported`` version, and make it current unless told not to: the model the project
        predicts with and retrains from. The project's reviews and predictions are untouched.

        Raises:
            CheckpointError: ``source`` is not a usable checkpoint (the message names the file);
                nothing is written then.
            StoreError: the project is open read-only.
        """
        self._writable()
        name = ver.import_checkpoint(self.root, source, {"author": current_user()})
        if make_current:
            self.set_current(name, f"imported from {Path(source).resolve()}")
        return self.version(name)

    def _models_attrs(self) -> dict[str, Any]:
        try:
            return _attrs(zarr.open_group(self._store, path=ver.MODELS, mode="r"))
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return {}

    # -- internals -------------------------------------------------------------------------

    def _frame_shape(self, scan_id: str) -> tuple[int, int, int]:
        shape = self.scan(scan_id).shape
        return (shape[0], shape[1], shape[2])

    def _slot(self, scan_id: str, kind: str, task: str) -> str:
        return f"scans/{scan_id}/{kind}/{self._task(task)}"

    def _current(self, scan_id: str, kind: str, task: str) -> zarr.Group | None:
        slot = self._slot(scan_id, kind, task)
        name = rev.current(self._store, slot)
        if name is None:
            return None
        return zarr.open_group(self._store, path=f"{slot}/{name}", mode="r")
