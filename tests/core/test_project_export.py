"""Exporting a project: files per reviewed scan, measurements CSV, DICOM-SEG rules, CLI."""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file

import propl.project_export as project_export
from propl.cli import main
from propl.project_export import export_project, iter_export
from propl.store import Project, StoreError

TASK = "thyroid_nodule"


def disc(shape=(2, 48, 64), r=10) -> np.ndarray:
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    frame = ((yy - 24) ** 2 + (xx - 32) ** 2 <= r * r).astype(np.uint8)
    return np.repeat(frame[None], shape[0], axis=0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "p.zarr"
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        a = p.add_scan(rng.integers(0, 255, (2, 48, 64), np.uint8), "a", spacing_mm=(0.5, 0.5))
        b = p.add_scan(rng.integers(0, 255, (2, 48, 64), np.uint8), "b")
        c = p.add_scan(rng.integers(0, 255, (2, 48, 64), np.uint8), "c")
        for scan_id in (a, b, c):
            p.save_prediction(
                scan_id, TASK, disc(), np.zeros((2, 48, 64)), np.array([0.8, 0.6]), "v7"
            )
        p.save_review(a, TASK, "corrected", disc(r=12), author="ann")
        p.save_review(b, TASK, "rejected", reason="artefact")
    return path


def scan_ids(project: Path) -> dict[str, str]:
    """``{scan name: scan id}``."""
    with Project.open(project, read_only=True) as p:
        return {p.scan(i).name: i for i in p.scan_ids()}


@pytest.mark.parametrize("names", ["id", "source"])
def test_reviewed_scans_are_exported_with_measurements(
    project: Path, tmp_path: Path, names: str
) -> None:
    # files, CSV rows and the report name scans by their pseudonymous id unless asked
    ids = scan_ids(project) if names == "id" else {n: n for n in "abc"}
    a = ids["a"]
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, formats=("tiff", "png", "nifti"), names=names)
    names_written = sorted(f.name for f in report.written)
    assert names_written == [f"{a}_thyroid_nodule.nii.gz", f"{a}_thyroid_nodule.tif"] + [
        f"{a}_thyroid_nodule_f000{i}.png" for i in range(2)
    ]
    np.testing.assert_array_equal(tifffile.imread(out / f"{a}_thyroid_nodule.tif"), disc(r=12))
    nii = nib.load(out / f"{a}_thyroid_nodule.nii.gz")
    assert nii.header.get_zooms()[:2] == (0.5, 0.5)
    assert any(f"{ids['b']}: rejected" in s for s in report.skipped)
    assert any(f"{ids['c']}: not reviewed" in s for s in report.skipped)
    rows = list(csv.DictReader(report.csv.open()))
    assert [(r["scan"], r["frame"], r["status"], r["unit"]) for r in rows] == [
        (a, "0", "corrected", "mm"),
        (a, "1", "corrected", "mm"),
    ]
    assert float(rows[0]["area"]) == pytest.approx(np.pi * 144 * 0.25, rel=0.05)
    assert rows[0]["author"] == "ann" and float(rows[1]["confidence"]) == pytest.approx(0.6)


def test_include_unreviewed_and_no_silent_overwrite(project: Path, tmp_path: Path) -> None:
    ids = scan_ids(project)
    a, c = (f"{ids[n]}_thyroid_nodule.tif" for n in "ac")
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, formats=("tiff",), include_unreviewed=True)
        assert sorted(f.name for f in report.written) == sorted([a, c])
        before = (out / a).read_bytes()
        with pytest.raises(FileExistsError, match=a):
            export_project(p, TASK, out, formats=("tiff",))
    assert (out / a).read_bytes() == before


def test_dicom_seg_for_a_dicom_source_and_a_reason_otherwise(tmp_path: Path) -> None:
    src = tmp_path / "still.dcm"
    shutil.copy(str(get_testdata_file("examples_palette.dcm", download=False)), src)
    with Project.create(tmp_path / "p.zarr") as p:
        scan_id = p.add_file(src)
        shape = p.scan(scan_id).shape[:3]
        mask = np.zeros(shape, np.uint8)
        mask[0, 10:40, 10:40] = 1
        p.save_review(scan_id, TASK, "corrected", mask)
        other = p.add_scan(np.zeros((1, 8, 8), np.uint8), "png-scan")
        p.save_review(other, TASK, "corrected", np.ones((1, 8, 8), np.uint8))
        report = export_project(p, TASK, tmp_path / "out", formats=("dicom-seg",))
    assert [f.name for f in report.written] == [f"{scan_id}_thyroid_nodule.seg.dcm"]
    assert any(
        f"{other}: no DICOM-SEG (not imported from a DICOM file)" in s for s in report.skipped
    )


def test_cli_export(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["export", "--project", str(project), "--task", TASK, "--out", str(out)]) == 0
    a = scan_ids(project)["a"]
    assert (out / f"{a}_thyroid_nodule.tif").is_file()
    assert (out / f"measurements_{TASK}.csv").is_file()
    err = capsys.readouterr().err
    assert "no DICOM-SEG (not imported from a DICOM file)" in err
    code = main(["export", "--project", str(project), "--task", "liver", "--out", str(out)])
    assert code == 2 and "no task 'liver'" in capsys.readouterr().err
    code = main(["export", "--project", str(tmp_path / "nope"), "--task", TASK, "--out", str(out)])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_export_and_models_run_without_torch(
    project: Path, tmp_path: Path, torch_loaded_by
) -> None:
    # Neither command needs the model; on a small CPU importing torch would cost them seconds.
    out = tmp_path / "out"
    loaded = torch_loaded_by(
        "from propl.cli import main\n"
        f"assert main(['export', '--project', {str(project)!r}, '--task', {TASK!r},"
        f" '--out', {str(out)!r}]) == 0\n"
        f"assert main(['models', '--project', {str(project)!r}]) == 0\n"
    )
    assert (out / f"measurements_{TASK}.csv").is_file()
    assert loaded == []


# -- patient identity stays in the hospital ------------------------------------------------

PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-0047113",
    "PatientBirthDate": "19710203",
    "AccessionNumber": "ACC-998877",
    "InstitutionName": "Springfield General Hospital",
    "StationName": "ECHO-ROOM-3",
}


def dicom_project(tmp_path: Path, keep_phi: bool = False) -> tuple[Path, str, Path]:
    """A project with one reviewed scan imported from a DICOM holding patient data, whose
    file name holds the patient's name: (project, scan id, source file)."""
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm", download=False))
    for key, value in PHI.items():
        setattr(ds, key, value)
    src = tmp_path / "DOE_JANE_19710203_thyroid_nodule.dcm"
    ds.save_as(src)
    path = tmp_path / "p.zarr"
    with Project.create(path) as p:
        scan_id = p.add_file(src, keep_phi=keep_phi)
        mask = np.zeros(p.scan(scan_id).shape[:3], np.uint8)
        mask[0, 100:160, 200:300] = 1
        p.save_review(scan_id, TASK, "corrected", mask)
    return path, scan_id, src


def leaks(folder: Path) -> list[str]:
    """Patient data found in the names or the bytes of the files under ``folder``."""
    found = []
    for f in folder.rglob("*"):
        text = f.name + (f.read_bytes().decode("latin-1") if f.is_file() else "")
        found += [f"{f.name}: {v}" for v in (*PHI.values(), "DOE", "JANE") if v in text]
    return found


def test_export_holds_no_patient_data_by_default(tmp_path: Path) -> None:
    # the source file is gone (and a project no longer needs to know its path): the SEG is
    # built from the scan's stored, de-identified header
    project, scan_id, src = dicom_project(tmp_path)
    src.unlink()
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out)
    assert not report.failed
    assert f"{scan_id}_thyroid_nodule.seg.dcm" in {f.name for f in report.written}
    assert sorted(f.name for f in out.iterdir() if f.is_file()) == [
        f"{scan_id}_thyroid_nodule.nii.gz",
        f"{scan_id}_thyroid_nodule.seg.dcm",
        f"{scan_id}_thyroid_nodule.tif",
        f"measurements_{TASK}.csv",
    ]
    assert leaks(out) == []
    seg = pydicom.dcmread(out / f"{scan_id}_thyroid_nodule.seg.dcm")
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientName == ""
    rows = list(csv.DictReader(report.csv.open()))
    assert {r["scan"] for r in rows} == {scan_id}


def test_export_keeps_patient_data_and_names_on_request(tmp_path: Path, capsys) -> None:
    project, scan_id, src = dicom_project(tmp_path, keep_phi=True)
    src.unlink()
    out = tmp_path / "out"
    args = ["export", "--project", str(project), "--task", TASK, "--out", str(out)]
    assert main([*args, "--names", "source", "--keep-patient-data"]) == 0
    stem = "DOE_JANE_19710203_thyroid_nodule_thyroid_nodule"
    seg = pydicom.dcmread(out / f"{stem}.seg.dcm")
    assert seg.PatientName == PHI["PatientName"] and seg.PatientID == PHI["PatientID"]
    assert "PatientIdentityRemoved" not in seg
    rows = list(csv.DictReader((out / f"measurements_{TASK}.csv").open()))
    assert rows[0]["scan"] == "DOE_JANE_19710203_thyroid_nodule"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = capsys.readouterr().out
    assert "--names {id,source}" in help_text and "--keep-patient-data" in help_text


# -- safe export: all or nothing, one bad scan does not stop the others --------------------


def test_failed_export_leaves_nothing_and_a_rerun_succeeds(
    project: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "exports" / "out"

    def disk_full(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project_export, "write_measurements_csv", disk_full)
    with Project.open(project, read_only=True) as p, pytest.raises(OSError, match="space"):
        export_project(p, TASK, out, include_unreviewed=True)
    assert not out.exists()
    assert list((tmp_path / "exports").iterdir()) == []  # no temporary folder left either
    monkeypatch.undo()
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, include_unreviewed=True)
    assert not report.failed and len(report.written) == 2 * 4  # a and c: tif, 2 png, nii
    assert all(f.is_file() and f.is_relative_to(out) for f in report.written)


def test_cancelled_export_leaves_nothing(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        gen = iter_export(p, TASK, out, include_unreviewed=True)
        assert next(gen) == (1, 3)
        gen.close()  # the Review widget's worker was stopped
    assert list(tmp_path.iterdir()) == [project]


def test_export_into_a_folder_with_other_files(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, formats=("tiff",))
    assert (out / "notes.txt").read_text() == "mine"
    assert [f.parent for f in report.written] == [out] and report.written[0].is_file()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out", "p.zarr"]


@pytest.mark.parametrize("failure", ["damaged scan", "writer error"])
def test_one_bad_scan_does_not_stop_the_others(
    project: Path, tmp_path: Path, monkeypatch, capsys, failure: str
) -> None:
    ids = scan_ids(project)
    bad = ids["a"]
    if failure == "damaged scan":
        review = Project.review

        def damaged_review(self, scan_id, task):
            if scan_id == bad:
                raise StoreError(f"scan {scan_id} is damaged: reviews/{task}/mask: bad chunk")
            return review(self, scan_id, task)

        monkeypatch.setattr(Project, "review", damaged_review)
    else:
        write_nifti = project_export.write_nifti

        def failing_nifti(mask, path, *args, **kw):
            if path.name.startswith(bad):
                raise ValueError("cannot write this one")
            return write_nifti(mask, path, *args, **kw)

        monkeypatch.setattr(project_export, "write_nifti", failing_nifti)
    out = tmp_path / "out"
    args = ["export", "--project", str(project), "--task", TASK, "--out", str(out)]
    assert main([*args, "--include-unreviewed"]) == 1
    err = capsys.readouterr().err
    assert f"failed {bad}: " in err and "1 scan(s) failed" in err
    good = ids["c"]
    assert sorted(f.name for f in out.iterdir() if f.is_file()) == [
        f"{good}_thyroid_nodule.nii.gz",
        f"{good}_thyroid_nodule.tif",
        f"measurements_{TASK}.csv",
    ]
    assert not any(bad in f.name for f in out.rglob("*"))  # no half of the bad scan
    rows = list(csv.DictReader((out / f"measurements_{TASK}.csv").open()))
    assert {r["scan"] for r in rows} == {good}


def test_non_finite_spacing_is_exported_as_unknown(
    project: Path, tmp_path: Path, monkeypatch
) -> None:
    a = scan_ids(project)["a"]
    scan = Project.scan

    def nan_spacing(self, scan_id):
        s = scan(self, scan_id)
        if scan_id != a:
            return s
        return dataclasses.replace(s, spacing_mm=(math.nan, 0.5), frame_time_ms=math.inf)

    monkeypatch.setattr(Project, "scan", nan_spacing)
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, tmp_path / "out", formats=("nifti",))
    assert not report.failed and [f.name for f in report.written] == [f"{a}_thyroid_nodule.nii.gz"]
    assert any(n.startswith(f"{a}: stored pixel spacing") for n in report.notes)
    nii = nib.load(report.written[0])
    assert nii.header.get_xyzt_units()[0] == "unknown"
    rows = list(csv.DictReader(report.csv.open()))
    assert {r["unit"] for r in rows} == {"px"}
