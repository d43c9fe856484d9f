"""The tests never read or write the user's own napari settings."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("napari")


def test_napari_settings_are_this_runs_own(make_napari_viewer) -> None:
    """The plugin sets napari's reader preference for DICOM and napari's viewer fixture resets
    every setting: both must land in a file of the test run (tests/conftest.py)."""
    from napari.settings import get_settings

    from napari_propl._reader import prefer_for_dicom

    make_napari_viewer()
    path = Path(get_settings().config_path).resolve()
    assert path.is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert "propl-tests-napari-" in str(path)
    prefer_for_dicom()
    assert get_settings().plugins.extension2reader.get("*.dcm") == "napari-propl"
