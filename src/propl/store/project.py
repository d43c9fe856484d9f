"""The project store: scans, predictions, reviewed masks and their provenance in one zarr v3 folder.

Layout (see docs/architecture.md in the repository)::

    project.zarr/
      zarr.json                          attrs: schema, created, app version, tasks
      scans/<scan_id>/                   attrs: name, sha256, spacing, region, header, ...
        image                            (F, H, W) or (F, H, W, 3), one chunk per frame
        pred/<task>/rNNNNNN/             mask uint8, uncertainty float16; attrs: model version,
                                         per-frame confidence, checksums
        labels/<task>/rNNNNNN/           mask uint8 (none for rejected/skipped); attrs: status,
                                         frames (one state per frame), author, time, model
                                         version, edited pixels, seconds, checksums
      models/                            model versions (written by retraining)
      .lock                              the writer lock (names its owner)

Every write is crash-safe (see :mod:`propl.store.revisions`): a new scan is built in a staging
folder and renamed into ``scans/``; predictions and labels are revisions behind a pointer. Only
one process writes at a time (:mod:`propl.store.lock`); any number may read, and a reader sees
the old or the new revision, never a mix. Every array is verified against its checksums when
read (:mod:`propl.store.integrity`): damage is reported as :class:`DamagedError` naming the scan
and the file, never read as data. What makes a frame a training label is
:mod:`propl.store.review_state`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.storage import LocalStore

from .. import __version__
from ..region import Region
from ..tasks import DEFAULT_TASKS, Task
from . import revisions as rev
from . import versions as ver
from .integrity import CHECKSUMS, DamagedError, StoreError, verify
from .lock import ProjectLock, current_user
from .records import QueueItem, Review, Scan, StoredPrediction
from .review_state import LABELLED, NOT_DONE, STATUSES, describe, frame_states, scan_status

SCHEMA_VERSION = 2
"""2: checksums, per-frame review states and drafts (version 1 projects open and upgrade)."""
_RACE_RETRIES = 20
_T = TypeVar("_T")
__all__ = ["LABELLED", "STATUSES", "DamagedError", "Project", "StoreError"]


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


def _per_frame(attrs: dict[str, Any], key: str, frames: int) -> np.ndarray | None:
    """A prediction's per-frame score (confidence, task fit, shape factor): ``frames`` finite
    numbers in [0, 1], float32; None when absent. Anything else is damage (ValueError)."""
    value = attrs.get(key)
    if value is None:
        return None
    wrong = f"'{key}' is not {frames} numbers in [0, 1], one per frame"
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError) as exc:  # text, nested lists
        raise ValueError(f"{wrong} ({exc})") from exc
    if a.shape != (frames,) or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(wrong)
    return a.astype(np.float32)


def _confidence(attrs: dict[str, Any], frames: int) -> np.ndarray:
    """The per-frame confidence every prediction has (:func:`_per_frame`; missing: ValueError)."""
    confidence = _per_frame(attrs, "confidence", frames)
    if confidence is None:
        raise ValueError("'confidence' is missing")
    return confidence


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
        if not read_only and int(_attrs(self._root_group)["propl_schema"]) < SCHEMA_VERSION:
            # what version 1 wrote reads as before; what is written from now on has checksums
            # and per-frame states, which an older napari-propl must not misread
            self._root_group.attrs.update({"propl_schema": SCHEMA_VERSION})

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
        try:
            group = zarr.open_group(LocalStore(staged), mode="w", attributes=attrs)
            group.create_group("scans")
            group.create_group("models")
            if path.exists():
                path.rmdir()
            os.rename(staged, path)
        except OSError as exc:  # another process created it between our check and rename
            raise StoreError(
                f"cannot create a project at '{path}': it was created meanwhile ({exc.strerror})"
            ) from exc
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone after the rename; else our leftover
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
        """Scan ids in import order (a damaged scan last: reading it raises
        :class:`DamagedError`)."""
        scans = self.root / "scans"
        ids = [p.name for p in scans.iterdir() if p.is_dir() and not p.name.startswith(".")]

        def order(scan_id: str) -> tuple[float, str]:
            try:
                return self.scan(scan_id).imported, scan_id
            except StoreError:
                return float("inf"), scan_id

        return sorted(ids, key=order)

    def scan(self, scan_id: str) -> Scan:
        """What the store knows of a scan.

        Raises:
            StoreError: no such scan; :class:`DamagedError` when its metadata is damaged.
        """
        folder = self.root / "scans" / scan_id
        if not scan_id or "/" in scan_id or not folder.is_dir():
            raise StoreError(f"project '{self.root}' has no scan {scan_id!r}")
        with self._reading(scan_id, f"scans/{scan_id}/zarr.json"):
            d = _attrs(zarr.open_group(self._store, path=f"scans/{scan_id}", mode="r"))
            spacing = d.get("spacing_mm")
            return Scan(
                id=scan_id,
                name=str(d["name"]),
                shape=tuple(int(n) for n in d["shape"]),
                source=d.get("source"),
                sha256=d.get("sha256", ""),
                spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
                frame_time_ms=d.get("frame_time_ms"),
                modality=d.get("modality"),
                is_color=bool(d.get("is_color", False)),
                header=d.get("header"),
                imported=float(d.get("imported", 0.0)),
                burned_in_annotation=bool(d.get("burned_in_annotation", False)),
                region=Region.from_json(d.get("region")),
            )

    def image(self, scan_id: str, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The scan's frames as stored: ``(F, H, W)`` or ``(F, H, W, 3)``; only the frames at
        ``frames`` (sorted indices) when given, read chunk by chunk. Verified against the
        checksums written at import.

        Raises:
            DamagedError: the pixels are not what was imported (the message names the file).
        """
        scan = self.scan(scan_id)
        path = f"scans/{scan_id}/image"
        with self._reading(scan_id, path):
            group = zarr.open_group(self._store, path=f"scans/{scan_id}", mode="r")
            array = zarr.open_array(self._store, path=path, mode="r")
            if tuple(array.shape) != scan.shape:
                raise DamagedError(
                    self.root, scan_id, f"{path}/zarr.json", f"shape {array.shape} != {scan.shape}"
                )
            idx = None if frames is None else np.asarray(frames, dtype=np.intp)
            data = np.asarray(array[:] if idx is None else array.get_orthogonal_selection((idx,)))
            self._verify(scan_id, path, data, group, "image", idx)
            return data

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
        burned_in_annotation: bool = False,
        region: Region | None = None,
    ) -> str:
        """Import frames; returns the scan id. Importing the same content again returns the
        existing id (the hash of the source file, or of the pixels, identifies a scan).

        Args:
            frames: ``(H, W)``, ``(F, H, W)`` or ``(F, H, W, 3)`` uint8/uint16 as acquired.
            region: the imaging region (:mod:`propl.region`); None: the whole frame.
        """
        self._writable()
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        is_color = frames.ndim == 4 and frames.shape[-1] == 3
        if not (frames.ndim == 3 or is_color) or 0 in frames.shape:
            raise StoreError(f"cannot import {name!r}: frames of shape {frames.shape}")
        if region is not None and not region.fits(frames.shape[1:3]):
            raise StoreError(f"cannot import {name!r}: {region} lies outside its frames")
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
                "burned_in_annotation": burned_in_annotation,
                "region": region.to_json() if region is not None else None,
                "imported": time.time(),
            }
            staged = rev.stage_group(self.root, {"image": frames}, attrs)
            os.rename(staged, self.root / "scans" / scan_id)  # the scan appears whole or not
            rev.fsync_dir(self.root / "scans")
            return scan_id

    def add_file(
        self,
        path: str | Path,
        *,
        keep_phi: bool = False,
        keep_source_path: bool = False,
        name: str | None = None,
    ) -> str:
        """Read a scan file and import it (DICOM headers de-identified unless ``keep_phi``).

        The scan is shown under ``name`` (default: the file's name without its suffix); the
        file's path, which can carry a patient's name, is kept only with ``keep_source_path``.
        Exports name files by the scan's pseudonymous id unless asked otherwise.

        Raises:
            ReaderError: the file cannot be read (the message names it).
        """
        from ..data.readers import read_scan

        path = Path(path)
        frames, meta = read_scan(path, keep_phi=keep_phi)
        return self.add_scan(
            frames,
            name or path.stem,
            source=path.resolve() if keep_source_path else None,
            sha256=file_sha256(path),
            spacing_mm=meta.spacing_mm,
            frame_time_ms=meta.frame_time_ms,
            modality=meta.modality,
            header=meta.header,
            burned_in_annotation=bool(getattr(meta, "burned_in_annotation", False)),
            region=meta.region,
        )

    def set_spacing(self, scan_id: str, spacing_mm: tuple[float, float]) -> None:
        """Set a scan's pixel spacing, ``(row, col)`` mm per pixel (e.g. calibrated on a known
        distance), replacing any it had; measurements and exports use it from now on.

        Raises:
            StoreError: no such scan, or not two positive finite numbers.
        """
        self._writable()
        values = tuple(float(s) for s in spacing_mm)
        if len(values) != 2 or not all(np.isfinite(s) and s > 0 for s in values):
            raise StoreError(f"spacing_mm must be two positive (row, col) values: {spacing_mm}")
        self.scan(scan_id)  # names a missing scan
        with self._mutex:  # one atomic replace of the scan's zarr.json
            group = zarr.open_group(self._store, path=f"scans/{scan_id}", mode="r+")
            group.attrs.update({"spacing_mm": list(values)})

    # -- predictions -----------------------------------------------------------------------

    def save_prediction(
        self,
        scan_id: str,
        task: str,
        mask: np.ndarray,
        uncertainty: np.ndarray,
        confidence: np.ndarray,
        model_version: str,
        task_fit: np.ndarray | None = None,
        shape_fit: np.ndarray | None = None,
    ) -> None:
        """Store a task's prediction for a scan, replacing the previous one (``task_fit``: per
        frame, how much it looks like the task's training scans, :mod:`propl.task_fit`;
        ``shape_fit``: per frame, the factor the mask's shape put on the confidence,
        :mod:`propl.task_shape`)."""
        self._writable()
        shape = self._frame_shape(scan_id)
        for what, a in (("mask", mask), ("uncertainty", uncertainty)):
            if a.shape != shape:
                raise StoreError(f"{what} of shape {a.shape} does not fit scan {scan_id} {shape}")
        scores = {"confidence": confidence, "task_fit": task_fit, "shape_fit": shape_fit}
        try:
            _confidence(scores, shape[0])
            for key in ("task_fit", "shape_fit"):
                _per_frame(scores, key, shape[0])
        except ValueError as exc:
            raise StoreError(f"scan {scan_id}: {exc}") from exc
        arrays: dict[str, np.ndarray] = {
            "mask": np.asarray(mask, np.uint8),
            "uncertainty": np.asarray(uncertainty, np.float16),
        }
        attrs: dict[str, Any] = {
            "model_version": model_version,
            "time": time.time(),
            "confidence": [float(c) for c in np.asarray(confidence)],
            "task_fit": None if task_fit is None else [float(f) for f in np.asarray(task_fit)],
            "shape_fit": None if shape_fit is None else [float(f) for f in np.asarray(shape_fit)],
        }
        with self._mutex:
            # the previous revision stays until the next save: a reader that is reading it
            # finishes, or sees the pointer moved and reads the new one
            rev.commit(self.root, self._store, self._slot(scan_id, "pred", task), arrays, attrs, 2)

    def prediction(self, scan_id: str, task: str) -> StoredPrediction | None:
        """The task's current prediction (verified), or None when there is none.

        Raises:
            DamagedError: it is damaged (the message names the file).
        """

        def read(group: zarr.Group, path: str) -> StoredPrediction:
            attrs = _attrs(group)
            mask = self._array(scan_id, path, group, "mask")
            return StoredPrediction(
                mask=mask,
                uncertainty=self._array(scan_id, path, group, "uncertainty"),
                confidence=_confidence(attrs, len(mask)),
                model_version=str(attrs["model_version"]),
                time=float(attrs["time"]),
                task_fit=_per_frame(attrs, "task_fit", len(mask)),
                shape_fit=_per_frame(attrs, "shape_fit", len(mask)),
            )

        return self._read_current(scan_id, "pred", task, read)

    def prediction_confidence(self, scan_id: str, task: str) -> float | None:
        """Mean per-frame confidence of the current prediction (without reading masks)."""

        frames = self._frame_shape(scan_id)[0]

        def read(group: zarr.Group, _path: str) -> float:
            return float(np.mean(_confidence(_attrs(group), frames)))

        return self._read_current(scan_id, "pred", task, read)

    # -- reviews ---------------------------------------------------------------------------

    def save_review(
        self,
        scan_id: str,
        task: str,
        status: str,
        mask: np.ndarray | None = None,
        *,
        frames: Sequence[int] | None = None,
        author: str | None = None,
        seconds: float = 0.0,
        reason: str = "",
        model_version: str | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Review:
        """Record a review; when this returns, it survives any crash.

        ``draft`` stores an edit that is not confirmed (autosave: never a training label);
        ``accepted`` and ``corrected`` confirm the mask (``frames``: only those frames of a
        cine; the others keep their state, see :mod:`propl.store.review_state`); ``accepted``
        without a mask confirms what was shown (the draft, else the prediction);
        ``rejected``/``skipped`` store no mask (give a reason). Edited pixels are counted
        against the current prediction.
        """
        self._writable()
        self._task(task)
        if status not in STATUSES:
            raise StoreError(f"unknown review status {status!r}; choose one of {STATUSES}")
        shape = self._frame_shape(scan_id)
        pred, previous = self._readable(self.prediction, scan_id, task), None
        if status not in ("rejected", "skipped") or mask is None:
            previous = self._readable(self.review, scan_id, task)
        if status == "accepted" and mask is None:
            shown = previous.mask if previous is not None else None
            mask = shown if shown is not None else (pred.mask if pred is not None else None)
            if mask is None:
                raise StoreError(f"cannot accept scan {scan_id}: it has no {task} prediction")
        if status in ("corrected", "draft") and mask is None:
            raise StoreError(f"a {status} review needs the mask")
        arrays: dict[str, np.ndarray] = {}
        base = pred.mask if pred is not None else np.zeros(shape, np.uint8)
        if mask is not None and status not in ("rejected", "skipped"):
            mask = np.asarray(mask)
            if mask.shape != shape:
                raise StoreError(f"mask of shape {mask.shape} does not fit scan {scan_id} {shape}")
            arrays["mask"] = (mask > 0).astype(np.uint8)
        if frames is not None and any(not 0 <= int(f) < shape[0] for f in frames):
            raise StoreError(f"frames {list(frames)} are outside scan {scan_id}'s {shape[0]}")
        states = frame_states(
            status,
            arrays.get("mask"),
            base,
            previous.mask if previous is not None else None,
            previous.frames if previous is not None else None,
            frames,
        )
        edited = int(np.count_nonzero(arrays["mask"] != (base > 0))) if arrays else 0
        attrs: dict[str, Any] = {
            "status": scan_status(states),
            "frames": states,
            "author": author or current_user(),
            "time": time.time(),
            "model_version": model_version or (pred.model_version if pred else None),
            "edited_pixels": edited,
            "seconds": float(seconds),
            "reason": reason,
            "provenance": provenance or {},
        }
        with self._mutex:
            name = rev.commit(
                self.root, self._store, self._slot(scan_id, "labels", task), arrays, attrs
            )
        return self._review_record(attrs, name, arrays.get("mask"))

    def review(self, scan_id: str, task: str, with_mask: bool = True) -> Review | None:
        """The current review (its mask verified when read), or None when there is none.

        Raises:
            DamagedError: it is damaged (the message names the file).
        """

        def read(group: zarr.Group, path: str) -> Review:
            a = _attrs(group)
            mask = None
            if with_mask and a["status"] not in ("rejected", "skipped"):
                mask = self._array(scan_id, path, group, "mask")
            n = None if "frames" in a else self.scan(scan_id).n_frames
            return self._review_record(a, path.rsplit("/", 1)[1], mask, n)

        return self._read_current(scan_id, "labels", task, read)

    @staticmethod
    def _review_record(
        a: dict[str, Any], revision: str, mask: np.ndarray | None, n_frames: int | None = None
    ) -> Review:
        status = str(a["status"])
        if status not in STATUSES:
            raise KeyError(f"status {status!r} is not one of {STATUSES}")
        frames = a.get("frames")
        if frames is None:  # written before per-frame states: the status held for every frame
            frames = [status] * (n_frames or 1)
        return Review(
            status=status,
            author=str(a["author"]),
            time=float(a["time"]),
            model_version=a.get("model_version"),
            edited_pixels=int(a["edited_pixels"]),
            seconds=float(a["seconds"]),
            reason=a.get("reason", ""),
            revision=revision,
            mask=mask,
            frames=tuple(str(f) for f in frames),
            provenance=dict(a.get("provenance") or {}),
        )

    def review_history(self, scan_id: str, task: str) -> list[str]:
        """Revision names of a scan's reviews, oldest first (every save is kept)."""
        return rev.revisions(self.root / self._slot(scan_id, "labels", task))

    def queue(self, task: str, include_reviewed: bool = False) -> list[QueueItem]:
        """Scans for review: least confident first, unpredicted and damaged last; by default
        only scans still waiting for a decision (unreviewed, drafts and damaged ones)."""
        self._task(task)
        items = []
        for scan_id in self.scan_ids():
            item = self._queue_item(scan_id, task)
            if include_reviewed or item.status in NOT_DONE:
                items.append(item)
        return sorted(
            items,
            key=lambda q: (q.status == "damaged", q.confidence is None, q.confidence or 0.0),
        )

    def _queue_item(self, scan_id: str, task: str) -> QueueItem:
        """One scan's queue entry; a damaged scan is listed as such, naming the damage."""
        try:
            review = self.review(scan_id, task, with_mask=False)
            conf = self.prediction_confidence(scan_id, task)
            name = self.scan(scan_id).name
        except StoreError as exc:
            return QueueItem(scan_id, scan_id, None, "damaged", str(exc))
        if review is None:
            return QueueItem(scan_id, name, conf, "unreviewed")
        detail = describe(review.frames)
        return QueueItem(scan_id, name, conf, review.status, detail)

    def progress(self, task: str) -> tuple[int, int]:
        """(reviewed, total) scans for a task: drafts and damaged scans are not reviewed."""
        items = self.queue(task, include_reviewed=True)
        return sum(q.status not in NOT_DONE for q in items), len(items)

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
            CheckpointError: its checkpoint fails to load or to predict (names the file).
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
            from ..checkpoint import verify_checkpoint  # imports torch: only when needed

            verify_checkpoint(version.path)  # a smoke prediction: a broken model is never used
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

    @contextmanager
    def _reading(self, scan_id: str, file: str) -> Iterator[None]:
        """Report anything that goes wrong while reading ``file`` as damage to the scan."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # zarr, JSON, codecs, missing keys: each a kind of damage
            reason = f"missing {exc}" if isinstance(exc, KeyError) else f"{exc}"
            raise DamagedError(self.root, scan_id, file, reason or type(exc).__name__) from exc

    def _pointer(self, scan_id: str, slot: str) -> str | None:
        with self._reading(scan_id, f"{slot}/zarr.json"):
            name = rev.current(self._store, slot)
        # revisions but no pointer file: it was deleted (a writer creates the pointer file
        # before its first revision, and sets it just after: then there is no review yet)
        if name is None and rev.revisions(self.root / slot):
            if not (self.root / slot / "zarr.json").is_file():
                raise DamagedError(
                    self.root, scan_id, f"{slot}/zarr.json", "the pointer is missing"
                )
        return name

    def _read_current(
        self, scan_id: str, kind: str, task: str, read: Callable[[zarr.Group, str], _T]
    ) -> _T | None:
        """``read(group, path)`` of a slot's current revision; None when there is none.

        A writer may replace the revision (and delete an older one) while it is read: when the
        read fails and the pointer has moved meanwhile, the new revision is read instead. A
        failure with the pointer unchanged is damage.
        """
        self.scan(scan_id)
        slot = self._slot(scan_id, kind, task)
        for _ in range(_RACE_RETRIES):
            name = self._pointer(scan_id, slot)
            if name is None:
                return None
            path = f"{slot}/{name}"
            try:
                with self._reading(scan_id, path):
                    if not (self.root / path).is_dir():
                        raise FileNotFoundError(f"the pointer names a missing revision {name}")
                    return read(zarr.open_group(self._store, path=path, mode="r"), path)
            except DamagedError:
                if self._pointer(scan_id, slot) == name:
                    raise
        raise DamagedError(self.root, scan_id, slot, "it kept changing while being read")

    def _array(self, scan_id: str, path: str, group: zarr.Group, name: str) -> np.ndarray:
        """An array of a revision, verified against the checksums written with it."""
        array = group[name]
        if not isinstance(array, zarr.Array):
            raise KeyError(f"{name} (a group where an array belongs)")
        data = np.asarray(array[...])
        self._verify(scan_id, path, data, group, name)
        return data

    def _verify(
        self,
        scan_id: str,
        path: str,
        data: np.ndarray,
        group: zarr.Group,
        name: str,
        frames: np.ndarray | None = None,
    ) -> None:
        sums = _attrs(group).get(CHECKSUMS)
        record = sums.get(name) if isinstance(sums, dict) else None
        if sums is not None and record is None:
            raise DamagedError(self.root, scan_id, f"{path}/{name}", "no checksum recorded")
        problem = verify(data, record, frames)
        if problem is not None:
            raise DamagedError(self.root, scan_id, f"{path}/{name}", problem)

    @staticmethod
    def _readable(read: Callable[[str, str], _T], scan_id: str, task: str) -> _T | None:
        """``read(scan_id, task)``, or None when what it reads is damaged (a new save then
        replaces it: the damaged revision stays in the history)."""
        try:
            return read(scan_id, task)
        except DamagedError:
            return None
