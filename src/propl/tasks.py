"""The task registry: what can be segmented, how it is prompted and how it is drawn.

A task is one (organ, target) pair, e.g. ``thyroid_nodule``. Its ``prompt`` is the text the
prompt-guided model is conditioned on; ``colour`` is how its masks are shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TASK_ID = re.compile(r"[a-z0-9_]+")
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
MAX_TASK_ID_LENGTH = 64

# Distinct colours (Sasha Trubetskoy's list) for tasks that bring none.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
)


def validate_task_id(name: str) -> str:
    """Check that ``name`` can be a task id and return it unchanged.

    Task ids name folders, store groups and prompt tokens, so they are kept to lowercase
    ASCII letters, digits and underscores.

    Raises:
        ValueError: ``name`` is empty, too long, or has other characters.
    """
    if not isinstance(name, str) or not _TASK_ID.fullmatch(name):
        raise ValueError(
            f"invalid task id {name!r}: use lowercase letters, digits and underscores only "
            "(e.g. 'thyroid_nodule')"
        )
    if len(name) > MAX_TASK_ID_LENGTH:
        raise ValueError(f"invalid task id {name!r}: longer than {MAX_TASK_ID_LENGTH} characters")
    return name


def validate_colour(colour: str) -> str:
    """Check a ``#rgb``, ``#rrggbb`` or ``#rrggbbaa`` hex colour; return it in lowercase.

    Raises:
        ValueError: not a hex colour.
    """
    if not isinstance(colour, str) or not _COLOUR.fullmatch(colour):
        raise ValueError(f"invalid colour {colour!r}: expected a hex colour such as '#ff0000'")
    return colour.lower()


@dataclass(frozen=True)
class Task:
    """One segmentation task.

    Attributes:
        id: lowercase ``[a-z0-9_]+`` identifier, e.g. ``"thyroid_nodule"``.
        organ: the organ scanned, e.g. ``"thyroid"``.
        target: what is segmented, e.g. ``"nodule"``.
        prompt: text the model is prompted with; defaults to ``id`` with ``_`` -> space.
        colour: hex display colour (stored lowercase).
    """

    id: str
    organ: str = ""
    target: str = ""
    prompt: str = ""
    colour: str = "#ff0000"

    def __post_init__(self) -> None:
        validate_task_id(self.id)
        object.__setattr__(self, "colour", validate_colour(self.colour))
        if not self.prompt:
            object.__setattr__(self, "prompt", self.id.replace("_", " "))


DEFAULT_TASKS: tuple[Task, ...] = (
    Task("breast_lesion", "breast", "lesion", "breast lesion", PALETTE[0]),
    Task("thyroid_nodule", "thyroid", "nodule", "thyroid nodule", PALETTE[1]),
    Task("fetal_head", "fetus", "head", "fetal head", PALETTE[2]),
    Task(
        "left_heart",
        "heart",
        "left ventricle, myocardium and left atrium (union)",
        "left heart (ventricle, myocardium and atrium)",
        PALETTE[3],
    ),
    Task("ovarian_tumor", "ovary", "tumor", "ovarian tumor", PALETTE[4]),
)
"""The five us-universal tasks, in the benchmark's order."""


def _task_from_entry(task_id: str, entry: Any, position: int, path: Path) -> Task:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: task {task_id!r} must map to an object, got {entry!r}")
    defaults = {t.id: t for t in DEFAULT_TASKS}
    colour = entry.get("colour") or entry.get("color")
    if colour is None:
        known = defaults.get(task_id)
        colour = known.colour if known else PALETTE[position % len(PALETTE)]
    try:
        return Task(
            id=task_id,
            organ=str(entry.get("organ", "")),
            target=str(entry.get("target", "")),
            prompt=str(entry.get("prompt", "")),
            colour=colour,
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_tasks_json(path: str | Path) -> list[Task]:
    """Read a us-universal-style ``tasks.json`` (task id -> organ, target, prompt, ...).

    Keys other than organ, target, prompt and colour/color (source, licence, labels, counts)
    are ignored. A task without a colour takes its ``DEFAULT_TASKS`` colour if it is one of
    those, else one from a fixed palette by position.

    Args:
        path: the JSON file.

    Returns:
        The tasks in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object of objects, or an invalid task id/colour; the
            message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping task ids to task descriptions")
    return [_task_from_entry(k, v, i, path) for i, (k, v) in enumerate(data.items())]


def task_colour(task: str, tasks: Iterable[Task] | None = None) -> str:
    """The display colour of ``task`` among ``tasks`` (default: the five built-in tasks);
    red for a task that is not there."""
    return next(
        (t.colour for t in (DEFAULT_TASKS if tasks is None else tasks) if t.id == task), "#ff0000"
    )
