"""The de-identified DICOM header: what is dropped by default, kept with keep_phi, and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset, FileMetaDataset, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage

from propl.data.dicom import KEPT_UIDS, PHI_KEYWORDS, dicom_header
from propl.data.readers import read_scan

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-0042",
    "PatientBirthDate": "19800101",
    "PatientSex": "F",
    "PatientAge": "044Y",
    "OtherPatientIDs": "ALT-777",
    "OtherPatientNames": ["Roe^Janet", "Doe^J"],
    "PatientAddress": "1 Main Street, Springfield",
    "PatientTelephoneNumbers": "555-0100",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Grey^Meredith",
    "OperatorsName": "Sono^Grapher",
    "InstitutionName": "Springfield General",
    "InstitutionAddress": "2 Hospital Road",
    "StationName": "ECHO-ROOM-3",
    "DeviceSerialNumber": "SN-991",
    "AccessionNumber": "ACC-123",
    "StudyID": "ST-9",
    "StudyDescription": "Echo for Jane Doe",
    "ImageComments": "Jane moved during the scan",
    "StudyDate": "20240229",
    "StudyTime": "101500",
    "AcquisitionDateTime": "20240229101501",
    "InstanceCreatorUID": "1.2.3.4.5",
}
UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.1",
    "SeriesInstanceUID": "1.2.826.0.1.2",
    "SOPInstanceUID": "1.2.826.0.1.3",
    "FrameOfReferenceUID": "1.2.826.0.1.4",
}


def region(**values) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.PhysicalUnitsXDirection = 3
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = 0.02
    item.PhysicalDeltaY = 0.02
    for key, value in values.items():
        setattr(item, key, value)
    return item


@pytest.fixture
def ds() -> Dataset:
    """An ultrasound image with PHI, UIDs, regions, private and bulk data."""
    ds = Dataset()
    for key, value in {**PHI, **UIDS}.items():
        setattr(ds, key, value)
    ds.SOPClassUID = UltrasoundImageStorage
    ds.Modality = "US"
    ds.Manufacturer = "Acme Ultrasound"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.FrameTime = "33.3"
    ds.NumberOfFrames = "1"
    ds.FrameIncrementPointer = 0x00181063
    ds.HeartRate = ""  # empty: left out
    ds.SequenceOfUltrasoundRegions = Sequence([region(), region(PhysicalDeltaY=float("nan"))])
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.99"
    ds.ReferencedImageSequence = Sequence([ref])  # other sequences: left out
    ds.add_new(0x00091010, "LO", "private note: Jane Doe")
    ds.add_new(0x60003000, "OW", b"\0" * 8)  # overlay data
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 6, 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(48, dtype=np.uint8).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_phi_dropped_by_default(ds):
    header = dicom_header(ds)
    assert not set(PHI) & set(header)
    text = json.dumps(header, allow_nan=False)
    for needle in ("Doe", "MRN-0042", "Springfield", "555-0100", "SN-991", "2024", "1.2.3.4.5"):
        assert needle not in text


def test_phi_kept_on_request(ds):
    header = dicom_header(ds, keep_phi=True)
    assert set(PHI) <= set(header)
    assert header["PatientName"] == "Doe^Jane"
    assert header["OtherPatientNames"] == ["Roe^Janet", "Doe^J"]
    json.dumps(header, allow_nan=False)


@pytest.mark.parametrize("keep_phi", [False, True])
def test_uids_and_technical_values_kept(ds, keep_phi):
    header = dicom_header(ds, keep_phi=keep_phi)
    for key, value in UIDS.items():
        assert header[key] == value  # needed for DICOM-SEG export
    assert header["SOPClassUID"] == UltrasoundImageStorage
    assert header["Modality"] == "US" and header["Manufacturer"] == "Acme Ultrasound"
    assert header["ImageType"] == ["ORIGINAL", "PRIMARY"]
    assert header["FrameTime"] == pytest.approx(33.3) and type(header["FrameTime"]) is float
    assert header["NumberOfFrames"] == 1 and type(header["NumberOfFrames"]) is int
    assert header["Rows"] == 6 and header["FrameIncrementPointer"] == "(0018,1063)"


@pytest.mark.parametrize("keep_phi", [False, True])
def test_bulk_private_and_other_sequences_never_included(ds, keep_phi):
    header = dicom_header(ds, keep_phi=keep_phi)
    for key in ("PixelData", "OverlayData", "ReferencedImageSequence", "HeartRate"):
        assert key not in header
    text = json.dumps(header, allow_nan=False)
    assert "private note" not in text and "1.2.826.0.1.99" not in text


def test_ultrasound_regions_flattened(ds):
    regions = dicom_header(ds)["SequenceOfUltrasoundRegions"]
    assert isinstance(regions, list) and len(regions) == 2
    assert regions[0] == {
        "RegionSpatialFormat": 1,
        "RegionDataType": 1,
        "PhysicalUnitsXDirection": 3,
        "PhysicalUnitsYDirection": 3,
        "PhysicalDeltaX": 0.02,
        "PhysicalDeltaY": 0.02,
    }
    assert "PhysicalDeltaY" not in regions[1]  # NaN is not JSON: left out


def test_listed_keywords_are_dicom_keywords():
    unknown = [k for k in PHI_KEYWORDS | KEPT_UIDS if tag_for_keyword(k) is None]
    assert not unknown


def test_header_does_not_load_deferred_bulk_values(ds, tmp_path):
    ds.Rows, ds.Columns = 64, 64
    ds.PixelData = np.zeros(64 * 64, np.uint8).tobytes()
    ds.EncapsulatedDocument = b"%PDF" + b"\0" * 4096  # a bulk value outside the pixel group
    path = save(ds, tmp_path / "big.dcm")
    lazy = dcmread(path, defer_size=1024)  # the bulk values are read when accessed
    path.unlink()  # and accessing them now fails
    header = dicom_header(lazy)
    assert header["Rows"] == 64 and "PatientName" not in header


def test_read_scan_fills_the_header(ds, tmp_path):
    path = save(ds, tmp_path / "scan.dcm")
    frames, meta = read_scan(path)
    assert frames.shape == (1, 6, 8)
    assert "PatientName" not in meta.header
    assert meta.header["StudyInstanceUID"] == UIDS["StudyInstanceUID"]
    assert meta.spacing_mm == pytest.approx((0.2, 0.2))  # from the first region, cm -> mm
    json.dumps(meta.header, allow_nan=False)
    _, meta = read_scan(path, keep_phi=True)
    assert meta.header["PatientName"] == "Doe^Jane"


def test_other_formats_have_no_header(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "scan.png")
    assert read_scan(tmp_path / "scan.png")[1].header == {}


def test_frame_geometry_kept_for_dicom_seg():
    # A DICOM-SEG of an enhanced multi-frame image needs each frame's position, also when
    # only the stored header is left: the functional groups keep their geometry, nothing else.
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    if path is None:
        pytest.skip("pydicom test file eCT_Supplemental.dcm not installed")
    ds = dcmread(path, stop_before_pixels=True)
    header = dicom_header(ds)
    frames = header["PerFrameFunctionalGroupsSequence"]
    assert len(frames) == 2
    for item, frame in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        assert set(item) <= {
            "PlanePositionSequence",
            "PlaneOrientationSequence",
            "PixelMeasuresSequence",
        }
        (position,) = item["PlanePositionSequence"]
        expected = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == {"ImagePositionPatient": expected}
    (shared,) = header["SharedFunctionalGroupsSequence"]
    assert set(shared) == {"PlaneOrientationSequence", "PixelMeasuresSequence"}
    assert "PixelSpacing" in shared["PixelMeasuresSequence"][0]
    text = json.dumps(header, allow_nan=False)
    assert "FrameContentSequence" not in text and "FrameAcquisitionDateTime" not in text
