"""Atomic file writes and the JSON files beside a checkpoint's weights, free of heavy imports
(the project store, the exports and the per-task statistics use them)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` then rename over it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def beside_weights(checkpoint: str | Path, name: str) -> Path:
    """The file ``name`` beside a checkpoint's weights (``checkpoint``: its folder or its
    weights file)."""
    p = Path(checkpoint)
    return (p if p.is_dir() else p.parent) / name


def read_json_beside_weights(
    checkpoint: str | Path, name: str, what: str
) -> tuple[Path, Any] | None:
    """``(path, parsed JSON)`` of the file ``name`` beside a checkpoint's weights, or None when
    there is none.

    Raises:
        CheckpointError: the file exists but cannot be read or parsed; the message names it
            and ``what`` it holds.
    """
    path = beside_weights(checkpoint, name)
    if not path.is_file():
        return None
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable {what}: {exc}") from exc


def beside_weights_header(doc: Any, kind: str, schema: int, what: str) -> tuple[dict, dict]:
    """The ``tasks`` and ``metadata`` objects of a parsed JSON file beside a checkpoint's
    weights (a ``what`` file: "task fit"), once its ``kind`` and ``schema`` are checked.

    Raises:
        ValueError: a wrong kind or schema, or ``tasks``/``metadata`` not objects (the caller
            names the file).
    """
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ValueError(f"not a {what} file (kind must be {kind!r})")
    if doc.get("schema") != schema:
        raise ValueError(f"schema {doc.get('schema')!r} is not {schema}")
    tasks, metadata = doc.get("tasks"), doc.get("metadata", {})
    if not isinstance(tasks, dict) or not isinstance(metadata, dict):
        raise ValueError("'tasks' and 'metadata' must be objects")
    return tasks, metadata
