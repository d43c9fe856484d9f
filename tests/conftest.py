"""Shared fixtures. Every test writes only under ``tmp_path``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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
