"""Results files: JSON written atomically, with NaN/inf as null (strict JSON readers accept it)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
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


def write_results(stem: str | Path, doc: Any, markdown: str) -> str:
    """A benchmark's results: ``doc`` as ``STEM.json`` and ``markdown`` as ``STEM.md`` (folders
    made, each file written atomically); returns ``markdown`` (to print)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_suffix(".json"), doc)
    atomic_write_bytes(stem.with_suffix(".md"), markdown.encode())
    return markdown


def _git(folder: Path, *args: str) -> str | None:
    """``git ARGS`` in ``folder``; None when git fails there (no git, not a checkout)."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def checkout_commit(package: Path) -> tuple[str | None, bool | None]:
    """The commit of the git checkout whose tracked files include ``package`` (a folder), and
    whether tracked files differ from it; (None, None) otherwise. A package installed into a
    virtual environment that happens to sit inside some checkout is not tracked there, so it
    gets no commit rather than the wrong one."""
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    commit = _git(package, "rev-parse", "HEAD")
    changed = _git(package, "status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, None if changed is None else bool(changed)


def provenance() -> dict[str, Any]:
    """What produced a results file: propl's version and, when it runs from a git checkout,
    the commit and whether tracked files differed from it; torch, Python and the CPUs (the
    key ``machine`` of the benchmarks' results files)."""
    import torch

    from . import __version__

    commit, changed = checkout_commit(Path(__file__).resolve().parent)
    return {
        "propl": __version__,
        "commit": commit,
        "uncommitted_changes": changed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
