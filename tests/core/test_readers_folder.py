"""Folders of scans: which files count, reading them one by one, and bad or empty folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

from propl.data import readers
from propl.data.readers import (
    ReaderError,
    ReaderFileNotFoundError,
    ScanMeta,
    iter_scan_files,
    read_folder,
)


def write_dicom(path: Path) -> Path:
    """A 1-frame 6x8 ultrasound DICOM with a patient name."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientName = "US", "Doe^Jane"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 6, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(48, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5), 9, np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Scans (some broken) mixed with files and folders that are not scans."""
    root = tmp_path / "scans"
    write_png(root / "a.png")
    write_png(root / "B.PNG")
    write_dicom(root / "sub" / "c.dcm")
    write_dicom(root / "sub" / "deeper" / "IM0001")  # suffix-less DICOM
    write_dicom(root / "sub" / "1.2.840.5")  # UID-named DICOM
    (root / "broken.png").write_text("not an image")
    write_png(root / ".hidden.png")
    write_png(root / ".cache" / "x.png")
    write_dicom(root / "DICOMDIR")  # an index, not a scan
    (root / "notes.txt").write_text("hello")
    (root / "sub" / "data.bin").write_bytes(b"\0" * 200)
    return root


def test_iter_scan_files_recursive_sorted(folder):
    found = iter_scan_files(folder)
    assert [p.relative_to(folder).as_posix() for p in found] == [
        "B.PNG",
        "a.png",
        "broken.png",
        "sub/1.2.840.5",
        "sub/c.dcm",
        "sub/deeper/IM0001",
    ]
    assert found == sorted(found, key=str)


def test_iter_scan_files_top_level_only(folder):
    found = iter_scan_files(str(folder), recursive=False)
    assert [p.name for p in found] == ["B.PNG", "a.png", "broken.png"]


def test_iter_scan_files_empty_folder(tmp_path):
    assert iter_scan_files(tmp_path) == []


def test_read_folder_reports_bad_files(folder):
    results = {p.relative_to(folder).as_posix(): rest for p, *rest in read_folder(folder)}
    assert len(results) == 6
    (error,) = results.pop("broken.png")
    assert isinstance(error, ReaderError) and "broken.png" in str(error)
    for name, (frames, meta) in results.items():
        assert isinstance(meta, ScanMeta) and frames.shape[0] == 1, name
    assert results["sub/deeper/IM0001"][1].format == "dicom"


def test_read_folder_passes_options(folder):
    metas = {p.name: rest[-1] for p, *rest in read_folder(folder / "sub")}
    assert "PatientName" not in metas["c.dcm"].header
    metas = {p.name: rest[-1] for p, *rest in read_folder(folder / "sub", keep_phi=True)}
    assert metas["c.dcm"].header["PatientName"] == "Doe^Jane"
    bad = {p.name: rest[-1] for p, *rest in read_folder(folder, max_pixels=10)}
    assert all(isinstance(v, ReaderError) for v in bad.values())


def test_read_folder_is_lazy(folder, monkeypatch):
    calls = []
    real = readers.read_scan
    monkeypatch.setattr(readers, "read_scan", lambda p, **kw: calls.append(p) or real(p, **kw))
    results = read_folder(folder)
    assert calls == []
    next(results)
    assert len(calls) == 1


def test_read_folder_empty_missing_or_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no scans here")
    for path, match, kind in (
        (tmp_path / "empty", "no scan files", ReaderError),
        (tmp_path / "absent", "no such folder", ReaderFileNotFoundError),
        (tmp_path / "empty" / "readme.txt", "not a folder", ReaderError),
    ):
        with pytest.raises(kind, match=match) as info:
            read_folder(path)  # raised on the call, before iterating
        assert path.name in str(info.value)
