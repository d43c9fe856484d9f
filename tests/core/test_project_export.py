"""Exporting a project: files per reviewed scan, measurements CSV, DICOM-SEG rules, CLI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from pydicom.data import get_testdata_file

from propl.cli import main
from propl.project_export import export_project
from propl.store import Project

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


def test_reviewed_scans_are_exported_with_measurements(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, formats=("tiff", "png", "nifti"))
    names = sorted(f.name for f in report.written)
    assert names == ["a_thyroid_nodule.nii.gz", "a_thyroid_nodule.tif"] + [
        f"a_thyroid_nodule_f000{i}.png" for i in range(2)
    ]
    np.testing.assert_array_equal(tifffile.imread(out / "a_thyroid_nodule.tif"), disc(r=12))
    nii = nib.load(out / "a_thyroid_nodule.nii.gz")
    assert nii.header.get_zooms()[:2] == (0.5, 0.5)
    assert any("b: rejected" in s for s in report.skipped)
    assert any("c: not reviewed" in s for s in report.skipped)
    rows = list(csv.DictReader(report.csv.open()))
    assert [(r["scan"], r["frame"], r["status"], r["unit"]) for r in rows] == [
        ("a", "0", "corrected", "mm"),
        ("a", "1", "corrected", "mm"),
    ]
    assert float(rows[0]["area"]) == pytest.approx(np.pi * 144 * 0.25, rel=0.05)
    assert rows[0]["author"] == "ann" and float(rows[1]["confidence"]) == pytest.approx(0.6)


def test_include_unreviewed_and_no_silent_overwrite(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Project.open(project, read_only=True) as p:
        report = export_project(p, TASK, out, formats=("tiff",), include_unreviewed=True)
        assert sorted(f.name for f in report.written) == [
            "a_thyroid_nodule.tif",
            "c_thyroid_nodule.tif",
        ]
        before = (out / "a_thyroid_nodule.tif").read_bytes()
        with pytest.raises(FileExistsError, match="a_thyroid_nodule.tif"):
            export_project(p, TASK, out, formats=("tiff",))
    assert (out / "a_thyroid_nodule.tif").read_bytes() == before


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
    assert [f.name for f in report.written] == ["still_thyroid_nodule.seg.dcm"]
    assert any(
        "png-scan: no DICOM-SEG (not imported from a DICOM file)" in s for s in report.skipped
    )


def test_cli_export(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["export", "--project", str(project), "--task", TASK, "--out", str(out)]) == 0
    assert (out / "a_thyroid_nodule.tif").is_file() and (out / f"measurements_{TASK}.csv").is_file()
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
