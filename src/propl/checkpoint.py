"""Model checkpoints: weights as safetensors + a JSON config that rebuilds the model.

Nothing here ever unpickles: a ``.pt``/``.pth``/``.pkl``/``.ckpt`` file, or any file whose bytes
look like a pickle or a torch zip archive, is refused with a clear error. A config whose values
are of the wrong type or out of bounds (:class:`~propl.models.ProPLConfig` checks them) and
weights holding NaN or infinity are refused too; :func:`verify_checkpoint` also runs one small
prediction (and one click refinement, for a model with the head), before a model becomes a
project's current one.
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
from .models.refine import RefineHead, click_maps

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


def keep_side_files(source: str | Path, directory: str | Path) -> list[Path]:
    """Copy the files beside ``source``'s weights that describe its encoder, decoders and
    tasks (task fit statistics, task shape floors) to ``directory``, each checked on the way.
    For a checkpoint saved from ``source`` with those parts as they were: a new click head,
    a cast to float16. Returns the files written.

    Raises:
        CheckpointError: a side file of ``source`` is unreadable or invalid (it names it).
    """
    from .files import beside_weights
    from .task_fit import FILE_NAME as FIT_FILE
    from .task_fit import load_task_fit
    from .task_shape import FILE_NAME as SHAPE_FILE
    from .task_shape import load_task_shapes

    loaders = ((FIT_FILE, load_task_fit), (SHAPE_FILE, load_task_shapes))
    names = [name for name, load in loaders if load(source) is not None]  # all checked first
    for name in names:
        atomic_write_bytes(
            beside_weights(directory, name), beside_weights(source, name).read_bytes()
        )
    return [beside_weights(directory, name) for name in names]


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


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (PyTorch's often span several)."""
    return " ".join(str(exc).split())


def _known_config(config: dict[str, Any]) -> dict[str, Any]:
    """Drop config keys this version no longer has (``extra`` in early schema-1 files)."""
    from dataclasses import fields

    from .models.propl import ProPLConfig

    known = {f.name for f in fields(ProPLConfig)}
    return {k: v for k, v in config.items() if k in known}


def _json_object(config_path: Path) -> dict[str, Any]:
    """The config file's top-level JSON object.

    Raises:
        CheckpointError: unreadable, not JSON, or not an object; the message names the file.
    """
    try:
        text = config_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read the model config ({exc})") from exc
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, huge numbers
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{config_path}: must hold a JSON object, not a {type(doc).__name__}")
    return doc


def _read_doc(config_path: Path) -> dict[str, Any]:
    """The config file's JSON object with its schema and the types of its entries checked.

    Raises:
        CheckpointError: the message names the file and the bad entry.
    """
    doc = _json_object(config_path)
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{config_path}: unsupported schema {doc.get('schema_version')!r}")
    for key, kind, name in (("model", str, "string"), ("config", dict, "object")):
        if not isinstance(doc.get(key), kind):
            raise CheckpointError(f"{config_path}: '{key}' must be a JSON {name}")
    if not isinstance(doc.get("metadata", {}), dict):
        raise CheckpointError(f"{config_path}: 'metadata' must be a JSON object")
    return doc


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint's model config (the JSON's ``config``), with no weights loaded.

    Raises:
        CheckpointError: no readable config; the message names the file.
    """
    _, config_path = _resolve(path)
    doc = _json_object(config_path)
    config = doc.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: no readable model config ('config' is no object)")
    return config


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


def _build(doc: dict[str, Any], config_path: Path) -> ProPLNet:
    """The (untrained) network the config describes; its values checked before any allocation.

    Raises:
        CheckpointError: unknown model, or a config value of the wrong type or out of bounds;
            the message names the file and the key.
    """
    try:
        return build_model(doc["model"], **(_known_config(doc["config"]) | {"pretrained": False}))
    except (KeyError, TypeError, ValueError) as exc:
        why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise CheckpointError(f"{config_path}: invalid model config: {why}") from exc


def _read_weights(weights: Path, model: ProPLNet) -> dict[str, torch.Tensor]:
    """The weights file's tensors in the model's dtypes, every floating tensor finite.

    Raises:
        CheckpointError: not a readable safetensors file, or a tensor holding NaN or infinity
            (a diverged or damaged model: its predictions would be garbage); the message names
            the file and the tensor.
    """
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read the weights ({exc})") from exc
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{weights}: tensor '{key}' holds {bad} non-finite values (NaN or infinity): "
                "the model is broken"
            )
    return state


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint directory (or its ``model.safetensors`` / ``model.json``).

    Raises:
        CheckpointError: missing files, pickles, corrupt weights, weights holding NaN or
            infinity, a config value of the wrong type or out of bounds, or a config that does
            not match the weights; the message names the file (and the key or tensor).
    """
    weights, config_path = _resolve(path)
    for f in (weights, config_path):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file not found: {f}")
    _refuse_pickle(weights)
    doc = _read_doc(config_path)
    model = _build(doc, config_path)
    state = _read_weights(weights, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        why = _one_line(exc)
        raise CheckpointError(f"{weights}: weights do not match {config_path} ({why})") from exc
    model.eval()
    return Checkpoint(model, doc["model"], doc["config"], doc.get("metadata", {}), weights)


def smoke_frame(size: int) -> torch.Tensor:
    """A synthetic ``(1, 1, size, size)`` frame in [0, 1]: a gradient with a darker disc."""
    ramp = torch.linspace(0.0, 1.0, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.09).float()
    return (0.3 + 0.4 * xx - 0.25 * disc).clamp(0.0, 1.0)[None, None]


def _smoke_outputs(model: ProPLNet, folder: Path) -> dict[str, torch.Tensor]:
    """Both decoders' logits for :func:`smoke_frame` and the model's first task (CPU, eval),
    and the click refinement head's (``"refine"``) when the model has one.

    Raises:
        CheckpointError: the forward pass or the head fails; the message names ``folder``.
    """
    frame = smoke_frame(model.config.input_size)
    task = torch.zeros(1, dtype=torch.long)
    try:
        with torch.inference_mode():
            outputs = model(frame, task)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{folder}: the model cannot predict ({_one_line(exc)})") from exc
    head = model.refine
    if head is not None:
        try:
            with torch.inference_mode():
                outputs["refine"] = _smoke_refine(model, head, frame, task)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"{folder}: its click refinement head cannot refine ({_one_line(exc)})"
            ) from exc
    return outputs


def _smoke_refine(
    model: ProPLNet, head: RefineHead, frame: torch.Tensor, task: torch.Tensor
) -> torch.Tensor:
    """The refinement head's ``(1, 1, S/2, S/2)`` logits for ``frame``: a square start mask,
    one positive click at its centre and one negative click in a corner (as an annotator's
    first clicks would be)."""
    size = frame.shape[-1]
    half = size // 2
    mask = torch.zeros(1, 1, half, half)
    mask[..., half // 4 : 3 * half // 4, half // 4 : 3 * half // 4] = 1.0
    points = torch.tensor([[[half / 2, half / 2, 1.0], [half / 8, half / 8, -1.0]]])
    radius = head.config.click_radius * half / size
    embedding = head.embed(model.encode(frame), frame, model.prompt(task))
    return head.decode(embedding, click_maps(mask, points, radius))


def verify_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint and check it predicts: call this before a model becomes current.

    Besides everything :func:`load_checkpoint` checks, runs one forward pass (both decoders, no
    MC dropout) on one synthetic frame at the model's input size for its first task, and
    checks that the logits are finite and of the frame's shape; a model with the click
    refinement head also refines that frame from a start mask and two clicks, and its logits
    must be finite and of half the frame's size. Cheap: one frame on the CPU.

    Args:
        path: a checkpoint folder (or its ``model.safetensors`` / ``model.json``).

    Returns:
        The loaded checkpoint (eval mode, CPU), for callers that need it anyway.

    Raises:
        CheckpointError: the checkpoint cannot be loaded, or its smoke prediction (or its
            refinement head's) fails; the message names the file or folder.
    """
    checkpoint = load_checkpoint(path)
    folder = Path(checkpoint.path or path).parent
    size = checkpoint.model.config.input_size
    for key, logits in _smoke_outputs(checkpoint.model, folder).items():
        side = size // 2 if key == "refine" else size
        what = "the click refinement head's smoke refinement" if key == "refine" else key
        if tuple(logits.shape) != (1, 1, side, side):
            raise CheckpointError(
                f"{folder}: its smoke prediction ({what}) has shape {tuple(logits.shape)}, "
                f"expected {(1, 1, side, side)}"
            )
        if not torch.isfinite(logits).all():
            raise CheckpointError(
                f"{folder}: its smoke prediction ({what}) holds NaN or infinity: the model is "
                "broken"
            )
    return checkpoint
