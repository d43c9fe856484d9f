"""Mask writers: TIFF, PNG, NIfTI, DICOM-SEG and the measurements CSV; all read back."""

import csv
import gzip
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom import examples
from pydicom.data import get_testdata_file

from propl.data.dicom import dicom_header
from propl.data.readers import read_scan
from propl.export import (
    MEASUREMENT_COLUMNS,
    ExportError,
    write_dicom_seg,
    write_mask_pngs,
    write_mask_tiff,
    write_measurements_csv,
    write_nifti,
)
from propl.measure import measure_mask

SEG_KW = {"task_label": "thyroid nodule", "algorithm_version": "0.1.0-test"}


def make_masks(n_frames=3, shape=(24, 32), label=1, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_frames, *shape), np.uint8)
    for f in range(n_frames):
        r, c = rng.integers(4, shape[0] - 8), rng.integers(4, shape[1] - 8)
        masks[f, r : r + 6, c : c + 7] = label
    return masks


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def seg_masks(ds, n_frames=1):
    masks = np.zeros((n_frames, ds.Rows, ds.Columns), np.uint8)
    masks[:, ds.Rows // 4 : ds.Rows // 2, ds.Columns // 3 : ds.Columns // 2] = 1
    masks[:, 5, 7] = 1  # an asymmetric pixel: a flipped or transposed read-back would fail
    return masks


# -- TIFF and PNG -------------------------------------------------------------------------


@pytest.mark.parametrize("n_frames", [1, 3, 4, 5])
def test_tiff_round_trips_label_values(tmp_path, n_frames):
    masks = make_masks(n_frames, label=3)
    path = write_mask_tiff(masks, tmp_path / "deep" / "er" / "m.tif")
    back = tifffile.imread(path)
    assert back.dtype == np.uint8 and back.shape == masks.shape
    np.testing.assert_array_equal(back, masks)
    frames, meta = read_scan(path)  # 3 or 4 frames must not turn into one RGB(A) image
    assert not meta.is_color
    np.testing.assert_array_equal(frames, masks)
    assert leftovers(path.parent) == []


def test_pngs_one_per_frame(tmp_path):
    masks = make_masks(3, label=2)
    paths = write_mask_pngs(masks, tmp_path / "pngs", "scan01")
    assert [p.name for p in paths] == [f"scan01_f{i:04d}.png" for i in range(3)]
    for path, frame in zip(paths, masks, strict=True):
        with Image.open(path) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), frame)


def test_png_single_frame_has_no_frame_suffix(tmp_path):
    (path,) = write_mask_pngs(make_masks(1), tmp_path, "scan01")
    assert path.name == "scan01.png"
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), make_masks(1)[0])


def test_pngs_refuse_before_writing_any(tmp_path):
    (tmp_path / "s_f0002.png").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="s_f0002.png"):
        write_mask_pngs(make_masks(3), tmp_path, "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_f0002.png"]


def test_png_stem_must_be_a_name(tmp_path):
    with pytest.raises(ValueError, match="stem"):
        write_mask_pngs(make_masks(1), tmp_path, "sub/scan")


def test_bool_masks_become_0_1(tmp_path):
    masks = make_masks(2).astype(bool)
    back = tifffile.imread(write_mask_tiff(masks, tmp_path / "m.tif"))
    np.testing.assert_array_equal(back, masks.astype(np.uint8))


# -- common rules: overwrite, shapes, dtypes ---------------------------------------------


def _write(kind, masks, path, **kw):
    if kind == "tiff":
        return write_mask_tiff(masks, path, **kw)
    if kind == "png":
        return write_mask_pngs(masks, path.parent, path.name.removesuffix(".png"), **kw)[0]
    if kind == "nifti":
        return write_nifti(masks, path, **kw)
    if kind == "csv":
        return write_measurements_csv([{"scan": "a"}], path, **kw)
    return write_dicom_seg(masks, examples.get_path("rgb_color"), path, **SEG_KW, **kw)


KINDS = {"tiff": "m.tif", "png": "m.png", "nifti": "m.nii.gz", "csv": "m.csv", "seg": "m.dcm"}


@pytest.mark.parametrize("kind", KINDS)
def test_existing_file_needs_overwrite(tmp_path, kind):
    masks = np.zeros((1, 240, 320), np.uint8)
    masks[0, 100:120, 50:90] = 1
    path = tmp_path / KINDS[kind]
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=str(path)):
        _write(kind, masks, path)
    assert path.read_bytes() == b"old"
    assert _write(kind, masks, path, overwrite=True) == path
    assert path.read_bytes() != b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["tiff", "png", "nifti", "seg"])
@pytest.mark.parametrize(
    "masks, message",
    [
        (np.zeros((24, 32), np.uint8), "shape (24, 32)"),
        (np.zeros((1, 0, 32), np.uint8), "shape (1, 0, 32)"),
        (np.zeros((1, 24, 32), np.float32), "dtype float32"),
        (np.zeros((1, 24, 32), np.int64), "dtype int64"),
    ],
)
def test_bad_shapes_and_dtypes_are_refused(tmp_path, kind, masks, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _write(kind, masks, tmp_path / KINDS[kind])
    assert list(tmp_path.iterdir()) == []


# -- NIfTI -------------------------------------------------------------------------------


def test_nifti_round_trip_with_spacing_and_frame_time(tmp_path):
    masks = make_masks(5, shape=(24, 32), label=2)
    path = write_nifti(masks, tmp_path / "out" / "m.nii.gz", (0.5, 0.25), 33.3)
    assert gzip.decompress(path.read_bytes())[344:348] == b"n+1\x00"  # NIfTI-1 single file
    img = nib.load(path)
    assert img.shape == (32, 24, 5)  # (W, H, F): x = column, y = row
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), masks)
    pixdim = img.header["pixdim"]
    assert pixdim[1:4].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert pixdim[4] == pytest.approx(33.3, rel=1e-6)
    assert img.header.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_allclose(img.affine, np.diag([0.25, 0.5, 1.0, 1.0]))


def test_nifti_without_spacing_and_uncompressed(tmp_path):
    masks = make_masks(1)
    path = write_nifti(masks, tmp_path / "m.nii")
    assert path.read_bytes()[344:348] == b"n+1\x00"
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), masks)
    assert img.header["pixdim"][1:4].tolist() == [1.0, 1.0, 1.0]
    assert img.header.get_xyzt_units()[0] == "unknown"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "m.nrrd"}, ".nii.gz or .nii"),
        ({"spacing_mm": (0.0, 0.2)}, "spacing_mm"),
        ({"spacing_mm": (0.2, float("nan"))}, "spacing_mm"),
        ({"spacing_mm": (0.2,)}, "spacing_mm"),
        ({"frame_time_ms": -1.0}, "frame_time_ms"),
    ],
)
def test_nifti_bad_arguments(tmp_path, kwargs, message):
    path = tmp_path / kwargs.pop("path", "m.nii.gz")
    with pytest.raises(ValueError, match=message):
        write_nifti(make_masks(1), path, **kwargs)


# -- DICOM-SEG ---------------------------------------------------------------------------


@pytest.mark.parametrize("keep_phi", [False, True])
@pytest.mark.parametrize("name", ["palette_color", "rgb_color"])
def test_seg_of_single_frame_ultrasound(tmp_path, name, keep_phi):
    import highdicom as hd

    source = examples.get_path(name)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert src.Modality == "US" and "FrameOfReferenceUID" not in src
    masks = seg_masks(src)
    kw = {"keep_phi": True} if keep_phi else {}
    path = write_dicom_seg(masks, source, tmp_path / "seg" / "m.dcm", **kw, **SEG_KW)

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert ds.SegmentationType == "BINARY" and ds.Modality == "SEG"
    # the patient's ID only when asked to keep it (de-identified by default)
    assert ds.PatientID == (src.PatientID if keep_phi else "")
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SegmentSequence[0].SegmentLabel == "thyroid nodule"
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "ProPL"
    np.testing.assert_array_equal(ds.pixel_array, masks[0])

    seg = hd.seg.segread(path)
    back = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(back[..., 0], masks)


def test_seg_of_ct_slice_keeps_frame_of_reference(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    src = pydicom.dcmread(source, stop_before_pixels=True)
    masks = seg_masks(src)
    path = write_dicom_seg(masks, source, tmp_path / "ct_seg.dcm", **SEG_KW)
    ds = pydicom.dcmread(path)
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    np.testing.assert_array_equal(ds.pixel_array, masks[0])


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm"])
def test_seg_of_ultrasound_cine_is_refused_with_the_reason(tmp_path, name):
    source = get_testdata_file(name)  # a 30-frame US echo cine, no Frame of Reference
    src = pydicom.dcmread(source, stop_before_pixels=True)
    masks = seg_masks(src, int(src.NumberOfFrames))
    with pytest.raises(ExportError, match="Frame of Reference") as info:
        write_dicom_seg(masks, source, tmp_path / "m.dcm", **SEG_KW)
    assert isinstance(info.value, ValueError)
    assert str(source) in str(info.value) and "30 frames" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_seg_source_without_patient_attributes_is_refused(tmp_path):
    source = get_testdata_file("ExplVR_BigEnd.dcm")  # US image lacking PatientID and others
    src = pydicom.dcmread(source, stop_before_pixels=True)
    with pytest.raises(ExportError, match="PatientID") as info:  # nothing to keep
        write_dicom_seg(seg_masks(src), source, tmp_path / "m.dcm", keep_phi=True, **SEG_KW)
    assert str(source) in str(info.value)
    assert not (tmp_path / "m.dcm").exists()
    # de-identified (the default), the SEG's Patient/Study attributes are empty anyway
    ds = pydicom.dcmread(write_dicom_seg(seg_masks(src), source, tmp_path / "m.dcm", **SEG_KW))
    assert ds.PatientID == "" and ds.PatientIdentityRemoved == "YES"


def test_seg_refuses_a_non_dicom_source(tmp_path):
    png = tmp_path / "scan.png"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(png)
    with pytest.raises(ExportError, match="not a DICOM file") as info:
        write_dicom_seg(make_masks(1), png, tmp_path / "m.dcm", **SEG_KW)
    assert str(png) in str(info.value)
    with pytest.raises(ExportError, match="no such file"):
        write_dicom_seg(make_masks(1), tmp_path / "gone.dcm", tmp_path / "m.dcm", **SEG_KW)
    assert not (tmp_path / "m.dcm").exists()


def test_seg_masks_must_match_the_source(tmp_path):
    source = examples.get_path("rgb_color")  # 240 x 320
    with pytest.raises(ExportError, match=r"\(1, 24, 32\).*\(1, 240, 320\)"):
        write_dicom_seg(make_masks(1), source, tmp_path / "m.dcm", **SEG_KW)
    with pytest.raises(ValueError, match="binary"):
        write_dicom_seg(np.full((1, 240, 320), 2, np.uint8), source, tmp_path / "m.dcm", **SEG_KW)
    with pytest.raises(ValueError, match="task_label"):
        write_dicom_seg(
            np.zeros((1, 240, 320), np.uint8),
            source,
            tmp_path / "m.dcm",
            task_label="",
            algorithm_version="1",
        )


# -- DICOM-SEG: patient identity stays in the hospital -------------------------------------

# The attributes an earlier SEG copied from its source, with values found nowhere else.
PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-0047113",
    "PatientBirthDate": "19710203",
    "PatientSex": "F",
    "PatientAge": "053Y",
    "StudyDate": "20230917",
    "StudyTime": "071342",
    "AccessionNumber": "ACC-998877",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "InstitutionName": "Springfield General Hospital",
    "InstitutionAddress": "742 Evergreen Terrace",
    "StationName": "ECHO-ROOM-3",
    "DeviceSerialNumber": "SN-4455667",
}


def pydicom_file(name: str) -> Path:
    """A pydicom test file, never downloaded; skip when it is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(path)


def with_patient_data(name: str, folder: Path) -> Path:
    """A copy of pydicom's ``name`` holding the values of :data:`PHI`."""
    ds = pydicom.dcmread(pydicom_file(name))
    for key, value in PHI.items():
        setattr(ds, key, value)
    path = folder / f"DOE_JANE_19710203_{name}"
    ds.save_as(path)
    return path


def phi_in(data: bytes) -> list[str]:
    """The PHI values (but the one-letter sex) found anywhere in ``data``."""
    text = data.decode("latin-1")
    found = [v for k, v in PHI.items() if k != "PatientSex" and v in text]
    return found + [v for v in ("DOE", "JANE", "Springfield") if v.lower() in text.lower()]


def test_seg_is_deidentified_by_default(tmp_path):
    source = with_patient_data("US1_UNCR.dcm", tmp_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    path = write_dicom_seg(seg_masks(src), source, tmp_path / "m.dcm", **SEG_KW)
    assert phi_in(path.read_bytes()) == []
    ds = pydicom.dcmread(path)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate"):
        assert ds[key].value in ("", None), key  # Type 2: present and empty
    for key in ("PatientAge", "InstitutionName", "StationName", "InstitutionAddress"):
        assert key not in ds
    assert ds.DeviceSerialNumber == "none"  # ours, not the source's
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic" in ds.DeidentificationMethod
    codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113110", "DCM")]  # basic profile, retain UIDs
    # what references the source is kept
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_seg_keeps_patient_data_on_request(tmp_path):
    source = with_patient_data("US1_UNCR.dcm", tmp_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    path = write_dicom_seg(seg_masks(src), source, tmp_path / "m.dcm", keep_phi=True, **SEG_KW)
    ds = pydicom.dcmread(path)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate"):
        assert str(ds[key].value) == PHI[key]
    assert ds.AccessionNumber == PHI["AccessionNumber"] and ds.PatientAge == PHI["PatientAge"]
    assert "PatientIdentityRemoved" not in ds
    assert "SN-4455667" in path.read_bytes().decode("latin-1")  # the acquisition equipment


@pytest.mark.parametrize("keep_phi", [False, True])
@pytest.mark.parametrize("gone", ["deleted", "none"])
def test_seg_from_the_stored_header_when_the_source_is_gone(tmp_path, gone, keep_phi):
    import highdicom as hd

    source = with_patient_data("US1_UNCR.dcm", tmp_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    header = dicom_header(src, keep_phi=keep_phi)  # as the store keeps it
    source.unlink()
    masks = seg_masks(src)
    path = write_dicom_seg(
        masks,
        source if gone == "deleted" else None,
        tmp_path / "m.dcm",
        header=header,
        keep_phi=keep_phi,
        **SEG_KW,
    )
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert (phi_in(path.read_bytes()) == []) is not keep_phi
    assert ds.PatientName == (PHI["PatientName"] if keep_phi else "")
    seg = hd.seg.segread(path)
    back = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(back[..., 0], masks)


def test_seg_of_a_multi_frame_source_from_its_stored_header(tmp_path):
    source = pydicom_file("eCT_Supplemental.dcm")  # enhanced CT, 2 frames with positions
    src = pydicom.dcmread(source, stop_before_pixels=True)
    masks = seg_masks(src, 2)
    masks[1] = 0
    masks[1, :4, :4] = 1
    from_file = pydicom.dcmread(write_dicom_seg(masks, source, tmp_path / "f.dcm", **SEG_KW))
    path = write_dicom_seg(masks, None, tmp_path / "h.dcm", header=dicom_header(src), **SEG_KW)
    from_header = pydicom.dcmread(path)
    assert from_header.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert from_header.NumberOfFrames == 2
    np.testing.assert_array_equal(from_header.pixel_array, masks)

    def positions(ds):
        return [
            [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
            for f in ds.PerFrameFunctionalGroupsSequence
        ]

    assert positions(from_header) == positions(from_file) == positions(src)


def test_seg_without_source_nor_header_is_refused(tmp_path):
    with pytest.raises(ExportError, match="no stored header"):
        write_dicom_seg(make_masks(1), None, tmp_path / "m.dcm", **SEG_KW)
    with pytest.raises(ExportError, match="no such file"):
        write_dicom_seg(
            make_masks(1), tmp_path / "gone.dcm", tmp_path / "m.dcm", header={}, **SEG_KW
        )
    assert list(tmp_path.iterdir()) == []


# -- DICOM-SEG: every SEG we write validates (dciodvfy, Debian package dicom3tools) -------


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (apt-get install dicom3tools; .ci/system-deps installs it)",
)
@pytest.mark.parametrize("how", ["file", "header", "keep_phi"])
@pytest.mark.parametrize(
    "name, n_frames",
    [
        ("US1_UNCR.dcm", 1),  # single-frame ultrasound, no Frame of Reference
        ("examples_palette.dcm", 1),  # palette colour ultrasound
        ("CT_small.dcm", 1),  # single-frame CT with a Frame of Reference
        ("eCT_Supplemental.dcm", 2),  # multi-frame enhanced CT with plane positions
    ],
)
def test_every_seg_validates_with_dciodvfy(tmp_path, name, n_frames, how):
    source = with_patient_data(name, tmp_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    masks = seg_masks(src, n_frames)
    kw = {"keep_phi": True, **SEG_KW} if how == "keep_phi" else dict(SEG_KW)
    if how == "header":
        kw["header"] = dicom_header(src)
        source.unlink()
    path = write_dicom_seg(masks, source, tmp_path / "m.seg.dcm", **kw)
    assert dciodvfy_errors(path) == []


# -- measurements CSV --------------------------------------------------------------------


def test_measurements_csv_round_trip(tmp_path):
    masks = make_masks(2)
    rows = [
        {
            "scan": "a.dcm",
            "frame": i,
            "task": "nodule",
            "status": "predicted",
            "confidence": 0.875,
            **measure_mask(m, (0.1, 0.1)),
        }
        for i, m in enumerate(masks)
    ]
    rows.append({"scan": "a.dcm", "task": "nodule", "status": "accepted", "author": "Zoë"})
    rows.append({"scan": 'b, "quoted".png', "frame": 0, **measure_mask(np.zeros((4, 4), bool))})
    path = write_measurements_csv(rows, tmp_path / "csv" / "measurements.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        back = list(reader)
    assert tuple(reader.fieldnames) == MEASUREMENT_COLUMNS
    assert len(back) == 4
    assert back[0]["frame"] == "0" and back[1]["frame"] == "1"
    assert float(back[0]["area"]) == pytest.approx(rows[0]["area"], rel=1e-12)
    assert back[0]["unit"] == "mm" and back[0]["confidence"] == "0.875"
    assert back[2]["frame"] == "" and back[2]["area"] == "" and back[2]["author"] == "Zoë"
    assert back[3]["scan"] == 'b, "quoted".png'
    assert back[3]["area"] == "0.0" and back[3]["major_axis"] == "" and back[3]["unit"] == "px"


def test_measurements_csv_refuses_unknown_columns(tmp_path):
    with pytest.raises(ValueError, match="area_mm"):
        write_measurements_csv([{"scan": "a", "area_mm": 3.0}], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
