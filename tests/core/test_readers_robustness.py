"""Crafted bad inputs: every failure is a ReaderError naming the file, bombs are refused before
decoding, impossible header values are ignored with a warning, and batches go on past a bad file.
"""

from __future__ import annotations

import shlex
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from propl.data import readers
from propl.data.readers import (
    MAX_SCAN_BYTES,
    MAX_SCAN_BYTES_ENV,
    MAX_TIFF_PAGES_ENV,
    ReaderError,
    ReaderWarning,
    read_folder,
    read_scan,
)

GIB = 1 << 30


def pydicom_file(name: str) -> Path:
    """A pydicom test file, never downloaded; skip when it is not installed."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(path)


def ct_dataset() -> Dataset:
    return pydicom.dcmread(pydicom_file("CT_small.dcm"))


def with_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> Dataset:
    """``ds`` with element ``tag`` holding ``value`` as written, unchecked (e.g. text in a DS)."""
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path)
    return path


def read_warned(path: Path, **kw) -> tuple[np.ndarray, readers.ScanMeta, list[str]]:
    """read_scan, and the messages of the ReaderWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames, meta = read_scan(path, **kw)
    return frames, meta, [str(w.message) for w in caught if w.category is ReaderWarning]


def assert_error_names(path: Path, match: str | None = None, **kw) -> ReaderError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ReaderError, match=match) as info:
            read_scan(path, **kw)
    assert path.name in str(info.value)
    return info.value


def short_palette(path: Path) -> Path:
    """A PALETTE COLOR DICOM whose red LUT is shorter than its descriptor declares."""
    ds = pydicom.dcmread(pydicom_file("examples_palette.dcm"))
    ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[:100]
    return save(ds, path)


# -- header values that cannot be right: ignored with a warning naming the file -------------


@pytest.mark.parametrize(
    ("tag", "vr", "raw", "keyword"),
    [
        (0x00280030, "DS", b"abc\\def ", "PixelSpacing"),
        (0x00181063, "DS", b"fast", "FrameTime"),
        (0x00180040, "IS", b"slow", "CineRate"),
    ],
)
def test_text_in_a_number_is_ignored_with_a_warning(tmp_path, tag, vr, raw, keyword):
    path = save(with_raw(ct_dataset(), tag, vr, raw), tmp_path / f"text_{keyword}.dcm")
    frames, meta, messages = read_warned(path)
    assert frames.shape == (1, 128, 128)
    assert meta.frame_time_ms is None
    if keyword == "PixelSpacing":
        assert meta.spacing_mm is None
    else:
        assert meta.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert any(path.name in m and keyword in m for m in messages), messages


@pytest.mark.parametrize("raw", [b"nan\\nan ", b"inf\\0.5 ", b"0.5\\-inf", b"0\\0.5 "])
def test_non_finite_or_non_positive_pixel_spacing_is_not_stored(tmp_path, raw):
    path = save(with_raw(ct_dataset(), 0x00280030, "DS", raw), tmp_path / "bad_spacing.dcm")
    _, meta, messages = read_warned(path)
    assert meta.spacing_mm is None
    assert any(path.name in m and "PixelSpacing" in m for m in messages), messages


def test_nan_ultrasound_region_spacing_falls_back_to_pixel_spacing(tmp_path):
    ds = ct_dataset()
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX, region.PhysicalDeltaY = float("nan"), 0.01
    ds.SequenceOfUltrasoundRegions = [region]
    path = save(ds, tmp_path / "nan_region.dcm")
    _, meta, messages = read_warned(path)
    assert meta.spacing_mm == pytest.approx((0.661468, 0.661468))  # PixelSpacing's
    assert any(path.name in m and "SequenceOfUltrasoundRegions" in m for m in messages)


def test_non_finite_frame_time_is_ignored(tmp_path):
    path = save(with_raw(ct_dataset(), 0x00181063, "DS", b"inf "), tmp_path / "inf_time.dcm")
    _, meta, messages = read_warned(path)
    assert meta.frame_time_ms is None
    assert any(path.name in m and "FrameTime" in m for m in messages)


def test_burned_in_annotation_imports_with_a_warning_and_a_flag(tmp_path):
    ds = ct_dataset()
    ds.BurnedInAnnotation = "YES"
    path = save(ds, tmp_path / "burned.dcm")
    frames, meta, messages = read_warned(path)
    assert frames.shape == (1, 128, 128) and meta.burned_in_annotation is True
    assert any(path.name in m and "BurnedInAnnotation" in m for m in messages), messages
    ds.BurnedInAnnotation = "NO"
    _, meta, messages = read_warned(save(ds, tmp_path / "clean.dcm"))
    assert meta.burned_in_annotation is False and messages == []


# -- broken palettes and unforeseen errors: ReaderError naming the file -----------------------


def test_palette_without_lut(tmp_path):
    ds = pydicom.dcmread(pydicom_file("examples_palette.dcm"))
    del ds.GreenPaletteColorLookupTableData
    path = save(ds, tmp_path / "no_lut.dcm")
    assert_error_names(path, match="GreenPaletteColorLookupTableData")


def test_palette_without_any_lut_module(tmp_path):
    ds = pydicom.dcmread(pydicom_file("examples_palette.dcm"))
    for colour in ("Red", "Green", "Blue"):
        delattr(ds, f"{colour}PaletteColorLookupTableData")
        delattr(ds, f"{colour}PaletteColorLookupTableDescriptor")
    assert_error_names(save(ds, tmp_path / "no_luts.dcm"), match="Descriptor")


def test_palette_lut_shorter_than_its_descriptor(tmp_path):
    path = short_palette(tmp_path / "short_lut.dcm")
    assert_error_names(path, match="100 bytes, not the 256 entries")


@pytest.mark.parametrize("error", [ValueError("boom"), TypeError("boom"), MemoryError()])
def test_no_other_exception_escapes_read_scan(tmp_path, monkeypatch, error):
    path = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)

    def fail(*args):
        raise error

    monkeypatch.setattr(readers, "_to_storage_dtype", fail)
    err = assert_error_names(path)
    assert ("memory" in str(err)) == isinstance(error, MemoryError)


# -- decompression bombs: the declared size is checked before decoding ---------------------


def test_default_limit_is_about_one_gib():
    assert MAX_SCAN_BYTES == GIB
    assert readers.size_limits().max_bytes == GIB


def enlarge_tiff(path: Path, width: int, height: int) -> Path:
    """Make a small TIFF declare ``width`` x ``height`` pixels (a crafted bomb)."""
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        spots = [
            (tags[name], value) for name, value in (("ImageWidth", width), ("ImageLength", height))
        ]
        patches = [(t.valueoffset, "<H" if t.dtype == 3 else "<I", v) for t, v in spots]
    data = bytearray(path.read_bytes())
    for offset, fmt, value in patches:
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


def test_tiff_declaring_gigabytes_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib")
    enlarge_tiff(path, 60_000, 30_000)  # 1.8 GB declared in a file of a few hundred bytes
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", lambda *a, **k: pytest.fail("decoded"))
    err = assert_error_names(path, match="too large")
    assert (
        "1 GiB (1,073,741,824 bytes)" in str(err)
        and MAX_SCAN_BYTES_ENV in str(err)
        and "max_bytes" in str(err)
    )


def test_size_limit_from_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 32, 3), np.uint8), photometric="rgb")
    declared = 4 * 32 * 32 * 3  # channels count
    assert_error_names(path, match=f"{declared:,} bytes", max_bytes=declared - 1)
    assert read_scan(path, max_bytes=declared)[0].shape == (4, 32, 32, 3)
    monkeypatch.setenv(MAX_SCAN_BYTES_ENV, str(declared - 1))
    assert_error_names(path, match="too large")
    assert read_scan(path, max_bytes=declared)[0].shape == (4, 32, 32, 3)  # argument wins
    monkeypatch.setenv(MAX_SCAN_BYTES_ENV, "lots")
    with pytest.warns(ReaderWarning, match=MAX_SCAN_BYTES_ENV):
        assert read_scan(path)[0].shape == (4, 32, 32, 3)


@pytest.mark.parametrize("suffix", [".png", ".dcm"])
def test_size_limit_for_png_and_dicom(tmp_path, suffix):
    if suffix == ".png":
        path = tmp_path / "big.png"
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
        declared = 32 * 32 * 3
    else:
        path = pydicom_file("CT_small.dcm")
        declared = 128 * 128 * 2  # 16 bits allocated
    assert_error_names(path, match="too large", max_bytes=declared - 1)
    assert read_scan(path, max_bytes=declared)[0].shape[0] == 1


def test_apng_frames_count_against_the_limit(tmp_path):
    path = tmp_path / "cine.png"
    frames = [Image.fromarray(np.full((16, 16), i, np.uint8)) for i in range(10)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert_error_names(path, match="too large", max_bytes=10 * 16 * 16 - 1)
    assert read_scan(path, max_bytes=10 * 16 * 16)[0].shape == (10, 16, 16)


def test_deflated_dicom_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00420011, "OB", bytes(4 << 20))  # EncapsulatedDocument: 4 MiB of zeros
    path = tmp_path / "deflated.dcm"
    ds.save_as(path)
    assert path.stat().st_size < 200_000
    assert read_scan(path)[0].shape == (1, 128, 128)  # under the default limit: reads
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("inflated by pydicom"))
    assert_error_names(path, match="too large.*inflates", max_bytes=1 << 20)


def test_tiff_with_too_many_pages_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(30):
            tif.write(np.zeros((1, 1), np.uint8), contiguous=False)
    assert read_scan(path, max_pages=30)[0].shape[1:] == (1, 1)
    monkeypatch.setattr(tifffile.TiffFile, "series", property(lambda s: pytest.fail("series")))
    err = assert_error_names(path, match="too many pages", max_pages=29)
    assert "30" in str(err) and MAX_TIFF_PAGES_ENV in str(err)
    monkeypatch.setenv(MAX_TIFF_PAGES_ENV, "29")
    assert_error_names(path, match="too many pages")


def test_tiff_of_images_of_different_shapes_says_what_it_left_out(tmp_path):
    """tifffile splits such a file into series; reading only the first in silence would hide
    the rest of the file from the annotator."""
    path = tmp_path / "two.tif"
    first = np.full((40, 40), 9, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(first)
        tif.write(np.zeros((50, 30), np.uint8))
    frames, _, said = read_warned(path)
    np.testing.assert_array_equal(frames, first[None])
    assert len(said) == 1 and "two.tif" in said[0] and "holds 2 images" in said[0]
    assert "40 x 40" in said[0]


def test_non_finite_float_pixels_read_as_black_with_a_warning(tmp_path):
    path = tmp_path / "float.tif"
    pixels = np.linspace(1.0, 2.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    pixels[:10, :10], pixels[-1, -1] = np.nan, np.inf
    tifffile.imwrite(path, pixels)
    frames, _, said = read_warned(path)
    assert (frames[0, :10, :10] == 0).all() and frames[0, -1, -1] == 0
    assert frames.max() == 65535  # the finite values still span the range
    assert len(said) == 1 and "float.tif" in said[0] and "101 of 4,096" in said[0]
    fine = tmp_path / "fine.tif"
    tifffile.imwrite(fine, np.ones((8, 8), np.float32))
    assert read_warned(fine)[2] == []


def test_complex_pixels_are_refused(tmp_path):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not NumPy's "discards the imaginary part"
        assert_error_names(path, match="complex")


def test_cli_prints_a_file_warning_as_one_line_of_its_own(tmp_path, capsys):
    """Not Python's display of a warning (the reader's source file and line of code)."""
    from propl.cli import main
    from propl.inference import default_model_path

    if default_model_path() is None:
        pytest.skip("this build has no shipped model")
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.full((40, 40), 90, np.uint8))
        tif.write(np.zeros((50, 30), np.uint8))
    cmd = f"predict {path} {path.with_name('x.tif')} --task thyroid_nodule --model shipped"
    path.with_name("x.tif").write_bytes(path.read_bytes())
    assert main(shlex.split(f"{cmd} --out {tmp_path / 'out'} --device cpu")) == 0
    lines = capsys.readouterr().err.splitlines()
    said = [line for line in lines if "holds 2 images" in line]
    assert [line.split(": warning: ")[0] for line in said] == ["propl predict"] * 2
    assert {"two.tif", "x.tif"} == {Path(line.split("'")[1]).name for line in said}
    assert not any("ReaderWarning" in line or "readers.py" in line for line in lines)


# -- a bad file among good ones: the others are read, the bad one is named -----------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Two good scans and one whose reading raised TypeError before (a short palette LUT)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(folder / "a_good.png")
    save(ct_dataset(), folder / "b_good.dcm")
    short_palette(folder / "c_bad.dcm")
    return folder


def test_read_folder_reads_the_good_files_and_names_the_bad_one(mixed_folder):
    results = {p.name: rest for p, *rest in read_folder(mixed_folder)}
    (error,) = results.pop("c_bad.dcm")
    assert isinstance(error, ReaderError) and "c_bad.dcm" in str(error)
    assert sorted(results) == ["a_good.png", "b_good.dcm"]
    assert all(frames.shape[0] == 1 for frames, _ in results.values())


def test_napari_reader_loads_the_good_files_and_lists_the_bad_one(mixed_folder, monkeypatch):
    pytest.importorskip("napari")
    from napari_propl import _reader

    errors: list[str] = []
    notes: list[str] = []
    monkeypatch.setattr(_reader, "show_error", errors.append)
    monkeypatch.setattr(_reader, "show_warning", notes.append)
    ds = ct_dataset()
    ds.BurnedInAnnotation = "YES"
    save(ds, mixed_folder / "d_burned.dcm")
    layers = _reader.get_reader(str(mixed_folder))(str(mixed_folder))
    assert [kw["name"] for _, kw, _ in layers] == ["a_good", "b_good", "d_burned"]
    assert [kw["metadata"]["propl_burned_in_annotation"] for _, kw, _ in layers] == [
        False,
        False,
        True,
    ]
    assert len(errors) == 1 and "c_bad.dcm" in errors[0]
    assert any("d_burned.dcm" in n and "BurnedInAnnotation" in n for n in notes), notes
    assert any("c_bad.dcm" in n and "could not be read" in n for n in notes), notes


def test_predict_goes_on_past_a_bad_file_and_lists_it(mixed_folder, tmp_path, capsys):
    from propl.cli import main
    from propl.inference import default_model_path

    if default_model_path() is None:
        pytest.skip("this build has no shipped model")
    bad, good = mixed_folder / "c_bad.dcm", mixed_folder / "a_good.png"
    other = mixed_folder / "b_good.dcm"
    out = tmp_path / "out"
    cmd = f"predict {bad} {good} {other} --task thyroid_nodule --model shipped --out {out}"
    assert main(shlex.split(f"{cmd} --device cpu")) == 1
    assert (out / "a_good_mask.tif").is_file() and (out / "b_good_mask.tif").is_file()
    err = capsys.readouterr().err
    summary = err[err.index("1 of 3 files failed") :]
    assert "c_bad.dcm" in summary and "100 bytes" in summary
