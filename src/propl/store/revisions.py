"""Crash-safe slots: immutable revisions behind an atomically switched pointer.

A slot (e.g. ``scans/<id>/labels/<task>``) is a zarr group whose attribute ``current`` names
one of its child groups ``r000001``, ``r000002``, ... A new revision is written completely in
``<project>/.staging/`` as a standalone zarr group, renamed into the slot (one atomic
``rename``), and only then made current by rewriting the slot's ``zarr.json`` (zarr writes
every key beside its final name and renames it). A kill at any moment therefore leaves the
slot pointing at a complete revision: the old one or the new one, never half of either.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from .integrity import CHECKSUMS, checksums

STAGING = ".staging"
_REVISION = re.compile(r"r(\d{6})")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def frame_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One chunk per frame: a frame edit rewrites one file, a frame read decodes one."""
    return (1, *shape[1:])


def write_group(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write a standalone zarr group with ``arrays`` (one chunk per frame) and ``attrs``, plus
    the arrays' checksums (verified on every read: :mod:`propl.store.integrity`)."""
    attrs = attrs | {CHECKSUMS: checksums(arrays)}
    group = zarr.open_group(LocalStore(path), mode="w", attributes=attrs)
    for name, array in arrays.items():
        out = group.create_array(
            name,
            shape=array.shape,
            chunks=frame_chunks(array.shape),
            dtype=array.dtype,
            compressors=ZstdCodec(level=3),
            fill_value=0,
        )
        out[...] = array


def stage_group(root: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write a group under ``<root>/.staging`` (invisible to readers) and return its folder."""
    path = root / STAGING / uuid.uuid4().hex
    write_group(path, arrays, attrs)
    return path


def revisions(slot_dir: Path) -> list[str]:
    """Revision names present in a slot folder, oldest first."""
    if not slot_dir.is_dir():
        return []
    return sorted(p.name for p in slot_dir.iterdir() if _REVISION.fullmatch(p.name))


def commit(
    root: Path,
    store: LocalStore,
    slot: str,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    keep: int | None = None,
) -> str:
    """Write a new revision of ``slot`` and make it current; returns its name.

    Args:
        root: the project folder (``store``'s root).
        store: the project's zarr store.
        slot: slot path inside the project, e.g. ``"scans/ab12/labels/fetal_head"``.
        arrays: the revision's arrays.
        attrs: the revision's attributes.
        keep: keep at most this many revisions (the newest); None keeps all. Keep at least
            two where readers may be reading the previous one (they retry on the new one).
    """
    staged = stage_group(root, arrays, attrs)
    slot_dir = root / slot
    zarr.open_group(store, path=slot, mode="a")
    existing = revisions(slot_dir)
    number = int(existing[-1][1:]) + 1 if existing else 1
    name = f"r{number:06d}"
    os.rename(staged, slot_dir / name)
    fsync_dir(slot_dir)
    point(store, slot, name)  # the switch: one atomic file replace
    if keep is not None:
        for old in revisions(slot_dir)[:-keep]:
            if old != name:
                shutil.rmtree(slot_dir / old, ignore_errors=True)
    return name


def point(store: LocalStore, slot: str, name: str) -> None:
    """Make revision ``name`` of ``slot`` current (an atomic replace of the slot's metadata)."""
    zarr.open_group(store, path=slot, mode="a").attrs.update({"current": name})


def current(store: LocalStore, slot: str) -> str | None:
    """The current revision of ``slot``, or None when it has never been written."""
    try:
        group = zarr.open_group(store, path=slot, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    name = group.attrs.get("current")
    return str(name) if name else None


def clean_staging(root: Path) -> None:
    """Remove what a killed writer left half-done (staged groups, zarr's ``.partial`` files)."""
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for partial in root.rglob("*.partial"):
        partial.unlink(missing_ok=True)
