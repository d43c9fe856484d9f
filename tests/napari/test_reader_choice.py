"""Opening a PNG or a DICOM in napari needs no choice of reader (napari asks, or raises from
``viewer.open``, when several plugins claim a file and the user has no preference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

CINE = Path(str(get_testdata_file("examples_ybr_color.dcm", download=False)))


@pytest.fixture
def settings(monkeypatch):
    """napari's settings as a fresh user has them, never saved to disk."""
    import napari.settings
    from napari.settings import NapariSettings

    fresh = NapariSettings(config_path=None)
    monkeypatch.setattr(napari.settings, "_SETTINGS", fresh)
    return fresh


def test_png_and_dicom_open_without_asking(make_napari_viewer, qtbot, settings, tmp_path):
    from napari.plugins import _npe2

    png = tmp_path / "still.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50), np.uint8)).save(png)
    viewer = make_napari_viewer()
    assert list(_npe2.get_readers(str(png))) == ["napari"]  # ours does not claim PNG
    # plugin=None: napari decides as File > Open does (it raises MultipleReaderError where
    # File > Open shows its "choose reader" dialog); viewer.open's default is napari's reader
    [still] = viewer.open(png, plugin=None)
    assert still.data.shape == (40, 50)

    from napari.errors import MultipleReaderError

    with pytest.raises(MultipleReaderError):  # napari's builtins claim DICOM too: it asks
        viewer.open(CINE, plugin=None)
    viewer.window.add_plugin_dock_widget("napari-propl", "Segment (ProPL)")
    qtbot.waitUntil(lambda: settings.plugins.extension2reader.get("*.dcm") == "napari-propl")
    [cine] = viewer.open(CINE, plugin=None)
    assert cine.data.shape == (30, 240, 320, 3) and cine.rgb
    assert cine.metadata["propl_source"] == str(CINE)


def test_a_users_reader_preference_is_kept(make_napari_viewer, qtbot, settings):
    from napari_propl._reader import prefer_for_dicom

    settings.plugins.extension2reader = {"*.dcm": "napari"}
    assert prefer_for_dicom() == ["*.dicom"]
    assert settings.plugins.extension2reader == {"*.dcm": "napari", "*.dicom": "napari-propl"}
    assert prefer_for_dicom() == []
