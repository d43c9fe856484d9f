"""The store keeps no file path unless asked, and remembers a burned-in annotation warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from propl.store import Project


@pytest.fixture
def patient_file(tmp_path: Path) -> Path:
    folder = tmp_path / "DOE_JANE_19710203"
    folder.mkdir()
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.BurnedInAnnotation = "YES"
    path = folder / "DOE_JANE_thyroid.dcm"
    ds.save_as(path)
    return path


def test_no_source_path_unless_asked_and_burned_in_is_kept(tmp_path, patient_file) -> None:
    with Project.create(tmp_path / "p.zarr") as p:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sid = p.add_file(patient_file)
        assert any("burned" in str(w.message).lower() for w in caught)
        scan = p.scan(sid)
        assert scan.source is None and scan.burned_in_annotation
        stored = "".join(f.read_text(errors="ignore") for f in p.root.rglob("zarr.json"))
        assert "DOE_JANE_19710203" not in stored  # the folder (a patient's name) is not kept
    with Project.create(tmp_path / "q.zarr") as q:
        sid = q.add_file(patient_file, keep_source_path=True, name="case 7")
        assert q.scan(sid).source == str(patient_file.resolve())
        assert q.scan(sid).name == "case 7"
