"""Scan and mask readers: formats written in tmp_path, pydicom's bundled DICOMs, broken files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from propl.data import readers
from propl.data.readers import (
    SUPPORTED_SUFFIXES,
    ReaderError,
    ReaderFileNotFoundError,
    read_mask,
    read_scan,
    to_grayscale,
)


def pydicom_file(name: str) -> Path:
    """A pydicom test file, never downloaded; skip when it is not installed."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(path)


@pytest.fixture
def gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (48, 64), dtype=np.uint8)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture
def png_file(tmp_path: Path, gray: np.ndarray) -> Path:
    path = tmp_path / "scan.png"
    Image.fromarray(gray).save(path)
    return path


def assert_error_names(path: Path, match: str | None = None, **kw) -> ReaderError:
    with pytest.raises(ReaderError, match=match) as info:
        read_scan(path, **kw)
    assert path.name in str(info.value)
    return info.value


# -- raster formats ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_grayscale_and_rgb_roundtrip(tmp_path, gray, rgb, suffix):
    for name, arr in (("g", gray), ("c", rgb)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".tif":
            tifffile.imwrite(path, arr, photometric="rgb" if arr.ndim == 3 else None)
        else:
            Image.fromarray(arr).save(path)
        frames, meta = read_scan(path)
        assert frames.shape == (1, *arr.shape)
        assert frames.dtype == np.uint8
        np.testing.assert_array_equal(frames[0], arr)
        assert meta.is_color == (arr.ndim == 3)
        assert meta.n_frames == 1
        assert meta.format == {".png": "png", ".bmp": "bmp", ".tif": "tiff"}[suffix]


def test_jpeg_grayscale_and_rgb(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    smooth = (xx * 3 + yy).astype(np.uint8)
    for arr in (smooth, np.stack([smooth, 255 - smooth, smooth // 2], -1)):
        path = tmp_path / "scan.JPG"  # upper-case suffix
        Image.fromarray(arr).save(path, format="JPEG", quality=95)
        frames, meta = read_scan(path)
        assert meta.format == "jpeg"
        assert frames.shape == (1, *arr.shape) and frames.dtype == np.uint8
        assert np.abs(frames[0].astype(int) - arr).mean() < 3


def test_png_with_alpha_and_palette(tmp_path, gray):
    Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 7)], -1)).save(tmp_path / "a.png")
    frames, meta = read_scan(tmp_path / "a.png")
    assert frames.shape == (1, 48, 64, 3) and meta.is_color
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    frames, meta = read_scan(tmp_path / "p.png")
    assert frames.shape == (1, 48, 64) and not meta.is_color


def test_image_dpi_is_not_a_pixel_spacing(tmp_path, gray):
    """A PNG/JPEG's DPI is the exporting software's print resolution: taking it as mm per
    pixel would put made-up millimetres into measurements and layer scales."""
    Image.fromarray(gray).save(tmp_path / "s.png", dpi=(72, 72))
    Image.fromarray(gray).save(tmp_path / "s.jpg", dpi=(300, 150))
    for name, dpi in (("s.png", 72), ("s.jpg", 300)):
        _, meta = read_scan(tmp_path / name)
        assert meta.spacing_mm is None
        assert round(meta.extra["dpi"][0]) == dpi  # kept for the record


def test_sixteen_bit_png_and_tiff(tmp_path):
    arr = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "s.png")
    tifffile.imwrite(tmp_path / "s.tiff", arr)
    for name in ("s.png", "s.tiff"):
        frames, _ = read_scan(tmp_path / name)
        assert frames.dtype == np.uint16
        np.testing.assert_array_equal(frames[0], arr)


def test_multipage_tiff_gives_frames(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (5, 32, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cine.tif", stack)
    frames, meta = read_scan(tmp_path / "cine.tif")
    assert frames.shape == (5, 32, 40) and meta.n_frames == 5
    np.testing.assert_array_equal(frames, stack)
    colour = np.random.default_rng(1).integers(0, 255, (3, 32, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    frames, meta = read_scan(tmp_path / "rgb.tif")
    assert frames.shape == (3, 32, 40, 3) and meta.is_color
    np.testing.assert_array_equal(frames, colour)


def test_content_wins_over_unknown_suffix(tmp_path, png_file, gray):
    odd = tmp_path / "scan.export"
    shutil.copy(png_file, odd)
    frames, meta = read_scan(odd)
    assert meta.format == "png"
    np.testing.assert_array_equal(frames[0], gray)


def test_supported_suffixes_listed():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"} <= set(SUPPORTED_SUFFIXES)


# -- DICOM ---------------------------------------------------------------------------------


def test_dicom_ybr_echo_cine():
    from pydicom import examples

    frames, meta = read_scan(examples.get_path("ybr_color"))
    assert frames.shape == (30, 240, 320, 3) and frames.dtype == np.uint8
    assert meta.format == "dicom" and meta.is_color and meta.n_frames == 30
    assert meta.modality == "US" and meta.photometric == "YBR_FULL_422"
    assert meta.frame_time_ms == pytest.approx(33.333)
    # ultrasound region: PhysicalDeltaX/Y 0.0510 cm -> 0.510 mm
    assert meta.spacing_mm == pytest.approx((0.5105, 0.5105), abs=1e-4)
    assert meta.extra["Rows"] == 240 and meta.extra["SOPClassUID"].startswith("1.2.840")
    # converted to RGB: the echo is mostly gray, so channels agree (YBR left as is would not)
    assert np.abs(frames[..., 0].astype(int) - frames[..., 1]).mean() < 2


def test_dicom_single_frame_grayscale():
    frames, meta = read_scan(pydicom_file("CT_small.dcm"))
    assert frames.shape == (1, 128, 128) and frames.dtype in (np.uint8, np.uint16)
    assert not meta.is_color and meta.modality == "CT"
    assert meta.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert meta.frame_time_ms is None


def test_dicom_palette_colour():
    path = pydicom_file("examples_palette.dcm")
    frames, meta = read_scan(path)
    assert frames.shape == (1, 350, 800, 3) and frames.dtype == np.uint8
    assert meta.photometric == "PALETTE COLOR" and meta.is_color


def test_dicom_obstetric_palette_rle_if_installed():
    frames, meta = read_scan(pydicom_file("OBXXXX1A.dcm"))  # only in pydicom-data
    assert frames.ndim == 4 and frames.shape[-1] == 3 and meta.is_color


def test_dicom_monochrome1_is_inverted(tmp_path):
    import pydicom

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    normal, _ = read_scan(pydicom_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    inverted, _ = read_scan(tmp_path / "mono1.dcm")
    corr = np.corrcoef(normal.ravel().astype(float), inverted.ravel().astype(float))[0, 1]
    assert corr < -0.99


def test_dicom_jpeg_baseline_with_decoder():
    pytest.importorskip("pylibjpeg")
    pytest.importorskip("libjpeg")
    frames, meta = read_scan(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert frames.shape == (1, 100, 100, 3) and meta.is_color
    # the file is red/green/blue/yellow/... bands: top band red
    assert frames[0, 2, 50, 0] > 200 and frames[0, 2, 50, 1] < 60


def test_dicom_missing_decoder_says_what_to_install(monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    path = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    err = assert_error_names(path, match="pip install pylibjpeg pylibjpeg-libjpeg")
    assert "JPEG Baseline" in str(err)


def test_dicom_without_pixel_data(tmp_path):
    import pydicom

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    assert_error_names(path, match="no pixel data")


def test_dicom_too_many_pixels_checked_before_decoding(tmp_path, monkeypatch):
    from pydicom import examples

    monkeypatch.setattr(readers, "_dicom_pixels", lambda *a: pytest.fail("decoded"))
    path = Path(examples.get_path("ybr_color"))
    assert_error_names(path, match="too many pixels", max_pixels=30 * 240 * 320 - 1)


# -- broken inputs: every error names the file ---------------------------------------------


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_error_names(tmp_path / "empty.png", match="empty")


def test_truncated_png(tmp_path, png_file):
    path = tmp_path / "truncated.png"
    path.write_bytes(png_file.read_bytes()[:40])
    assert_error_names(path, match="truncated or corrupt")


def test_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    assert_error_names(path, match="not a PNG image")


def test_random_bytes_named_dcm(tmp_path):
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_error_names(path, match="not a DICOM")


def test_corrupt_dicom_after_marker(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 50)
    with warnings.catch_warnings():  # pydicom may warn about the missing delimiter
        warnings.simplefilter("ignore")
        assert_error_names(path, match="corrupt")


def test_unknown_suffix_and_content(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("hello")
    assert_error_names(path, match="unsupported")


def test_directory(tmp_path):
    folder = tmp_path / "scans.png"
    folder.mkdir()
    assert_error_names(folder, match="directory")


def test_missing_file(tmp_path):
    err = assert_error_names(tmp_path / "absent.png", match="no such file")
    assert isinstance(err, ReaderFileNotFoundError) and isinstance(err, FileNotFoundError)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_too_many_pixels(tmp_path, gray, suffix):
    path = tmp_path / f"big{suffix}"
    tifffile.imwrite(path, gray) if suffix == ".tif" else Image.fromarray(gray).save(path)
    assert_error_names(path, match="too many pixels", max_pixels=48 * 64 - 1)
    assert read_scan(path, max_pixels=48 * 64)[0].shape == (1, 48, 64)


# -- to_grayscale and masks ----------------------------------------------------------------


def test_to_grayscale_rgb_uses_luminance():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[..., 0] = 255  # pure red
    gray = to_grayscale(frames)
    assert gray.shape == (2, 4, 5) and gray.dtype == np.float32
    np.testing.assert_allclose(gray, 0.299, atol=1e-6)
    white = to_grayscale(np.full((1, 2, 2, 3), 255, np.uint8))
    np.testing.assert_allclose(white, 1.0, atol=1e-6)


def test_to_grayscale_uint8_and_uint16():
    np.testing.assert_allclose(
        to_grayscale(np.array([[[0, 51, 255]]], np.uint8)), [[[0, 0.2, 1.0]]], atol=1e-6
    )
    scaled = to_grayscale(np.array([[[0, 1024, 4095]]], np.uint16))  # 12-bit in 16
    np.testing.assert_allclose(scaled, [[[0, 1024 / 4095, 1.0]]], atol=1e-6)
    assert to_grayscale(np.zeros((1, 3, 3), np.uint16)).max() == 0
    with pytest.raises(ValueError, match="shape"):
        to_grayscale(np.zeros((3, 3)))


def test_read_mask_binarises(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 255
    mask[10:12, 10:20] = 1
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = read_mask(tmp_path / "mask.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask != 0)
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[5, 5, 2] = 9
    Image.fromarray(colour).save(tmp_path / "colour.png")
    assert read_mask(tmp_path / "colour.png").sum() == 1


def test_read_mask_errors_name_the_file(tmp_path):
    tifffile.imwrite(
        tmp_path / "cine_mask.tif", np.ones((3, 8, 8), np.uint8), photometric="minisblack"
    )
    for path in (tmp_path / "cine_mask.tif", tmp_path / "missing_mask.png"):
        with pytest.raises(ReaderError) as info:
            read_mask(path)
        assert path.name in str(info.value)
