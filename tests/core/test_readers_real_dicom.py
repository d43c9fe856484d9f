"""Every ultrasound DICOM that installed packages ship (pydicom, pydicom-data) must read.

Files are found on disk, never through ``get_testdata_files``, which downloads what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from propl.data.readers import ReaderError, read_scan


def dicom_folders() -> list[Path]:
    """pydicom's bundled test files and, when installed, pydicom-data's files."""
    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package
    if spec is not None and spec.origin is not None:
        folders.append(Path(spec.origin).parent / "data")
    return [folder for folder in folders if folder.is_dir()]


def ultrasound_files() -> list[Path]:
    found = []
    with warnings.catch_warnings():  # some test files are deliberately odd
        warnings.simplefilter("ignore")
        for folder in dicom_folders():
            for path in sorted(folder.rglob("*.dcm")):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
                except Exception:
                    continue
                if ds.get("Modality") == "US":
                    found.append(path)
    return found


US_FILES = {path.name: path for path in ultrasound_files()}
# lossless encodings of the same image: they must decode to the same RGB pixels
SAME_PIXELS = [
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),  # big-endian palette LUTs
    ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm"),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),  # RGB vs YBR_RCT in JPEG 2000
    ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),  # segmented 16-bit palette
]
TRUNCATED = [
    "examples_ybr_color.dcm",  # JPEG baseline cine
    "examples_rgb_color.dcm",  # native RGB
    "OBXXXX1A.dcm",  # native palette
    "OBXXXX1A_rle.dcm",
    "US1_J2KR.dcm",
    "gdcm-US-ALOKA-16_big.dcm",
]


def us_file(name: str) -> Path:
    if name not in US_FILES:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return US_FILES[name]


def read_or_skip(path: Path) -> tuple[np.ndarray, object]:
    """read_scan, skipping when this environment lacks the decoder the file needs."""
    try:
        return read_scan(path)
    except ReaderError as exc:
        if "no decoder installed" in exc.reason or "unsupported DICOM transfer" in exc.reason:
            pytest.skip(f"{path.name}: {exc.reason}")
        raise


def test_ultrasound_files_found():
    assert "examples_ybr_color.dcm" in US_FILES  # in the pydicom wheel itself


@pytest.mark.parametrize("name", sorted(US_FILES))
def test_real_ultrasound_dicom_reads(name):
    path = US_FILES[name]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames, meta = read_or_skip(path)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    assert frames.shape[:3] == (n_frames, ds.Rows, ds.Columns)
    assert meta.n_frames == n_frames >= 1
    assert meta.format == "dicom" and meta.modality == "US"
    if ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR":
        assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8
        assert meta.is_color
    else:
        assert frames.ndim == 3 and frames.dtype in (np.uint8, np.uint16)
        assert not meta.is_color
    assert frames.max() > frames.min()  # an image, not a blank
    assert meta.header["Modality"] == "US" and "PatientName" not in meta.header
    json.dumps(meta.header, allow_nan=False)


@pytest.mark.parametrize(("name", "other"), SAME_PIXELS)
def test_encodings_of_one_image_agree(name, other):
    first, _ = read_or_skip(us_file(name))
    second, _ = read_or_skip(us_file(other))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", TRUNCATED)
def test_truncated_real_dicom(tmp_path, name):
    data = us_file(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():  # pydicom warns about the missing end
        warnings.simplefilter("ignore")
        with pytest.raises(ReaderError) as info:
            read_scan(path)
    assert name in str(info.value)
