"""Results files: JSON written atomically, with NaN/inf as null (strict JSON readers accept it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively (``json.dumps`` would write ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
    return path
