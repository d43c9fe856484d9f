"""Model checkpoints: weights as safetensors + a JSON config that rebuilds the model.

Nothing here ever unpickles: a ``.pt``/``.pth``/``.pkl``/``.ckpt`` file, or any file whose bytes
look like a pickle or a torch zip archive, is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .files import atomic_write_bytes
from .models import ProPLNet, build_model

SCHEMA_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and its metadata."""

    model: ProPLNet
    name: str
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def save_checkpoint(
    model: ProPLNet,
    directory: str | Path,
    metadata: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` + ``directory/model.json``.

    Args:
        model: a model from :func:`propl.models.build_model` (it has ``config`` and
            ``registry_name``).
        directory: created if missing.
        metadata: JSON-serialisable extras (metrics, training data, provenance).
        dtype: cast floating tensors (e.g. ``torch.float16`` for a small shipped model).

    Returns:
        The path of the weights file.
    """
    directory = Path(directory)
    state = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[key] = t
    config = model.config.to_dict() | {"pretrained": False}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "model": getattr(model, "registry_name", "propl"),
        "config": config,
        "metadata": metadata or {},
    }
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".weights.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, weights)
    finally:
        Path(tmp).unlink(missing_ok=True)
    atomic_write_bytes(directory / CONFIG_NAME, json.dumps(doc, indent=2).encode())
    return weights


def _resolve(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"refusing to load {p}: '{p.suffix}' files are pickles, which can run arbitrary code. "
            "propl loads only safetensors weights with a JSON config (see `propl train`)."
        )
    if p.is_dir():
        return p / WEIGHTS_NAME, p / CONFIG_NAME
    if p.suffix == ".json":
        return p.with_name(WEIGHTS_NAME), p
    return p, p.with_name(CONFIG_NAME)


def _refuse_pickle(weights: Path) -> None:
    with open(weights, "rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"refusing to load {weights}: it is a pickle or torch archive, not safetensors"
        )


def _known_config(config: dict[str, Any]) -> dict[str, Any]:
    """Drop config keys this version no longer has (``extra`` in early schema-1 files)."""
    from dataclasses import fields

    from .models.propl import ProPLConfig

    known = {f.name for f in fields(ProPLConfig)}
    return {k: v for k, v in config.items() if k in known}


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint's model config (the JSON's ``config``), with no weights loaded.

    Raises:
        CheckpointError: no readable config; the message names the file.
    """
    _, config_path = _resolve(path)
    try:
        doc = json.loads(config_path.read_text())
        config = doc["config"]
        if not isinstance(config, dict):
            raise TypeError(f"'config' is a {type(config).__name__}, not an object")
        return config
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: no readable model config ({exc})") from exc


def read_tasks(path: str | Path) -> list[str]:
    """The task ids a checkpoint was trained for, from its JSON config (no weights loaded).

    Raises:
        CheckpointError: no readable config; the message names the file.
    """
    tasks = read_config(path).get("tasks")
    if not isinstance(tasks, list):
        _, config_path = _resolve(path)
        raise CheckpointError(f"{config_path}: no readable model config (no task list)")
    return [str(t) for t in tasks]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint directory (or its ``model.safetensors`` / ``model.json``).

    Raises:
        CheckpointError: missing files, pickles, corrupt weights, or a config that does not
            match the weights; the message names the file.
    """
    weights, config_path = _resolve(path)
    for f in (weights, config_path):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file not found: {f}")
    _refuse_pickle(weights)
    try:
        doc = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from exc
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{config_path}: unsupported schema {doc.get('schema_version')!r}")
    try:
        model = build_model(doc["model"], **(_known_config(doc["config"]) | {"pretrained": False}))
        state = load_file(str(weights))
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{weights}: cannot rebuild the model ({exc})") from exc
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not match {config_path} ({exc})") from exc
    model.eval()
    return Checkpoint(model, doc["model"], doc["config"], doc.get("metadata", {}), weights)
