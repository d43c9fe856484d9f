"""Shared fixtures. Every test writes only under ``tmp_path``."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# napari's settings (the reader preference the plugin sets, and the reset napari's viewer fixture
# does before every test) go to a file of this run, never to the user's own napari settings.
# Set before napari is imported: napari reads the variable once, at import.
_NAPARI_SETTINGS = Path(tempfile.mkdtemp(prefix="propl-tests-napari-"))
os.environ["NAPARI_CONFIG"] = str(_NAPARI_SETTINGS / "settings.yaml")
atexit.register(shutil.rmtree, _NAPARI_SETTINGS, ignore_errors=True)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The us-universal benchmark folder.

    ``$PROPL_DATA`` if set, else ``<repo>/../shared/datasets/us-universal``. Tests that
    use it skip cleanly when the folder is absent.
    """
    default = REPO_ROOT.parent / "shared" / "datasets" / "us-universal"
    root = Path(os.environ.get("PROPL_DATA", default))
    if not root.is_dir():
        pytest.skip(f"us-universal data not found at {root} (set PROPL_DATA)")
    return root


@pytest.fixture(scope="session")
def new_task_root() -> Path:
    """The us-new-task-dev folder (a structure the shipped model never saw).

    ``$PROPL_NEW_TASK_DATA`` if set, else ``<repo>/../shared/datasets/us-new-task-dev``; tests
    that use it skip cleanly when the folder is absent.
    """
    default = REPO_ROOT.parent / "shared" / "datasets" / "us-new-task-dev"
    root = Path(os.environ.get("PROPL_NEW_TASK_DATA", default))
    if not root.is_dir():
        pytest.skip(f"us-new-task-dev data not found at {root} (set PROPL_NEW_TASK_DATA)")
    return root


@pytest.fixture(scope="module")
def load_benchmark():  # type: ignore[no-untyped-def]
    """Load a script of ``benchmarks/`` (scripts, not part of the package) as a module by its
    file name; it leaves ``sys.modules`` when the test module ends."""
    import importlib.util

    names: list[str] = []

    def load(script: str):  # type: ignore[no-untyped-def]
        path = REPO_ROOT / "benchmarks" / script
        name = f"propl_benchmark_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def clicking_model():  # type: ignore[no-untyped-def]
    """A tiny untrained ProPL network of one task ``"t"`` at 64 px, with a refinement head."""
    import torch

    from propl.models import build_model

    torch.manual_seed(0)
    refine = {"width": 8, "click_radius": 3.0}
    return build_model(
        "propl-small", tasks=("t",), input_size=64, pretrained=False, refine=refine
    ).eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An untrained small network's checkpoint folder (tasks "a" and "b", 64² input, seed 0);
    copy it before writing beside its weights."""
    import torch

    from propl.checkpoint import save_checkpoint
    from propl.models import build_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    model = build_model("propl-small", tasks=("a", "b"), input_size=64, pretrained=False)
    save_checkpoint(model, folder)
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator; seeds Python's and torch's global generators too."""
    random.seed(0)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(0)
    return np.random.default_rng(0)


@pytest.fixture
def torch_loaded_by() -> Callable[[str], list[str]]:
    """Runs Python ``code`` in a fresh interpreter and returns the ``torch`` modules it loaded.

    A fresh interpreter, because this test process has long imported torch. The code may
    assert: a failure is reported with the child's stderr.
    """

    def run(code: str) -> list[str]:
        probe = (
            f"{code}\nimport json, sys\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch'))))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail with a clear message, instead of a Qt abort, when a Qt test has no display."""
    needs_display = {"make_napari_viewer", "qtbot"} & set(getattr(item, "fixturenames", ()))
    has_display = any(os.environ.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY"))
    if needs_display and not has_display and os.environ.get("QT_QPA_PLATFORM") is None:
        pytest.fail(
            "no X display for a Qt test: install Xvfb "
            "(`bash .ci/system-deps test` on Debian/Ubuntu); "
            "pytest-xvfb then starts it",
            pytrace=False,
        )
