"""The writer contribution: File > Save Selected Layers… with a Labels layer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

PLUGIN = "napari-propl"


@pytest.fixture
def mask_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    masks = np.zeros((3, 20, 30), np.uint8)
    masks[1, 5:10, 8:20] = 1
    return viewer, viewer.add_labels(masks, name="m", scale=(1.0, 0.2, 0.3))


def test_save_tiff_and_nifti_through_napari(mask_layer, tmp_path) -> None:
    import nibabel as nib

    viewer, layer = mask_layer
    written = viewer.layers.save(str(tmp_path / "m.tif"), selected=False, plugin=PLUGIN)
    assert written == [str(tmp_path / "m.tif")]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), layer.data)

    viewer.layers.save(str(tmp_path / "m.nii.gz"), selected=False, plugin=PLUGIN)
    img = nib.load(tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), layer.data)
    assert img.header.get_zooms()[:2] == pytest.approx((0.3, 0.2))  # (col, row) mm


def test_save_png_writes_one_file_per_frame(mask_layer, tmp_path) -> None:
    from PIL import Image

    viewer, layer = mask_layer
    written = viewer.layers.save(str(tmp_path / "m.png"), selected=False, plugin=PLUGIN)
    assert [p.rsplit("/", 1)[-1] for p in written] == [f"m_f{i:04d}.png" for i in range(3)]
    np.testing.assert_array_equal(np.asarray(Image.open(written[1])), layer.data[1])


def test_bad_values_and_suffix_name_the_file(tmp_path) -> None:
    from napari_propl._writer import write_labels

    big = np.full((4, 4), 300, np.int32)
    with pytest.raises(ValueError, match=r"big\.tif.*0\.\.255"):
        write_labels(str(tmp_path / "big.tif"), big, {})
    with pytest.raises(ValueError, match=r"m\.jpg"):
        write_labels(str(tmp_path / "m.jpg"), np.zeros((4, 4), np.uint8), {})
    assert not any(tmp_path.iterdir())  # nothing half-written
