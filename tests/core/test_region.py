"""The imaging region: read from DICOM ultrasound regions or detected, segmented alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

from propl.data.readers import ReaderWarning, read_scan
from propl.inference import Predictor
from propl.interactive import Click, Refiner
from propl.models import build_model
from propl.propagation import propagate
from propl.region import Region, crop_window, detect_region
from propl.store import Project

H, W = 120, 160
TISSUE = Region(30, 20, 110, 150, "dicom")  # rows 30:110, cols 20:150


def speckle(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Ultrasound-like tissue: bright-ish speckle, never black."""
    return rng.integers(40, 220, shape).astype(np.uint8)


def screen(rng: np.random.Generator, box: Region = TISSUE) -> np.ndarray:
    """A ``(H, W)`` screen: speckled tissue in ``box``, black around, a text strip on top."""
    frame = np.zeros((H, W), np.uint8)
    frame[box.slices] = speckle(rng, box.shape)
    frame[5:12, 10:150:3] = 255  # burned-in "PHILIPS ..." header: thin bright strokes
    frame[5:12, 11:150:7] = 255
    return frame


def us_region(x0: int, y0: int, x1: int, y1: int, spatial: int = 1, kind: int = 1) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType = spatial, kind
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = item.PhysicalDeltaY = 0.02
    return item


def write_dicom(path: Path, pixels: np.ndarray, regions: list[Dataset]) -> Path:
    """An 8-bit ultrasound still with ``regions`` as its SequenceOfUltrasoundRegions."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, generate_uid()
    ds.Modality = "US"
    ds.SequenceOfUltrasoundRegions = Sequence(regions)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def model(clicking_model: torch.nn.Module) -> torch.nn.Module:
    return clicking_model


class SpyPredictor(Predictor):
    """Records the frames the network is given (before resizing to its input)."""

    seen: list[np.ndarray]

    def encode(self, x: torch.Tensor, task_id: int):  # type: ignore[no-untyped-def]
        self.seen.append(x.cpu().numpy().copy())
        return super().encode(x, task_id)


def spy(model: torch.nn.Module) -> SpyPredictor:
    predictor = SpyPredictor(model, device="cpu", uncertainty="disagreement")
    predictor.seen = []
    return predictor


# -- DICOM ----------------------------------------------------------------------------------


def test_dicom_region_is_the_largest_2d_tissue_region(tmp_path, rng) -> None:
    """A Doppler spectrum larger than the image, and a smaller colour box, are not it; Max X1
    and Y1 are inclusive, and one past the edge (as some scanners write) is clipped."""
    regions = [
        us_region(0, 0, W - 1, H - 1, spatial=3, kind=3),  # PW spectral Doppler: not tissue
        us_region(40, 50, 90, 80, kind=2),  # colour flow box inside the image
        us_region(20, 30, W, 109),  # the tissue: cols 20..160 (one past), rows 30..109
    ]
    path = write_dicom(tmp_path / "us.dcm", screen(rng), regions)
    _, meta = read_scan(path)
    assert meta.region == Region(30, 20, 110, W, "dicom")
    assert meta.spacing_mm == pytest.approx((0.2, 0.2))


@pytest.mark.parametrize(
    "bad",
    [(20, 30, W + 5, 100), (90, 30, 20, 100), (20, 130, 150, 140)],
    ids=["past-the-edge", "empty", "below-the-frame"],
)
def test_a_dicom_region_outside_the_frame_is_ignored_with_a_warning(tmp_path, rng, bad) -> None:
    path = write_dicom(tmp_path / "odd.dcm", screen(rng), [us_region(*bad)])
    with pytest.warns(ReaderWarning, match=r"odd\.dcm.*ultrasound region 1"):
        _, meta = read_scan(path, detect_region=True)
    assert meta.region is None or meta.region.source == "detected"  # the pixels decide
    with pytest.warns(ReaderWarning):
        _, meta = read_scan(path, detect_region=False)
    assert meta.region is None


def test_prediction_is_zero_outside_the_region_and_the_network_sees_only_the_crop(
    tmp_path, rng, model
) -> None:
    frame = screen(rng)
    path = write_dicom(tmp_path / "us.dcm", frame, [us_region(20, 30, 149, 109)])
    frames, meta = read_scan(path)
    assert meta.region == TISSUE
    predictor = spy(model)
    pred = predictor.predict(frames, "t", threshold=0.0, region=meta.region)  # all foreground
    assert pred.mask.shape == pred.uncertainty.shape == pred.probability.shape == (1, H, W)
    outside = np.ones((H, W), bool)
    outside[TISSUE.slices] = False
    for name in ("mask", "probability", "uncertainty"):
        assert not getattr(pred, name)[0][outside].any(), name
    assert pred.mask[0][TISSUE.slices].all()
    (seen,) = predictor.seen
    assert seen.shape == (1, *TISSUE.shape)
    assert np.allclose(seen[0], frame[TISSUE.slices] / 255.0)  # the header never reaches it


def test_confidence_is_the_regions_own(model, rng) -> None:
    """Black borders around the region change nothing: the crop is what is judged."""
    tissue = speckle(rng, TISSUE.shape)
    framed = np.zeros((1, H, W), np.uint8)
    framed[(0, *TISSUE.slices)] = tissue
    predictor = Predictor(model, device="cpu", uncertainty="disagreement")
    alone = predictor.predict(tissue[None], "t")
    cropped = predictor.predict(framed, "t", region=TISSUE)
    assert np.allclose(cropped.confidence, alone.confidence, atol=1e-6)
    assert np.array_equal(cropped.mask[(0, *TISSUE.slices)], alone.mask[0])
    share = TISSUE.shape[0] * TISSUE.shape[1] / (H * W)
    assert np.allclose(cropped.expected_error, alone.expected_error * share, atol=1e-7)


def test_a_region_of_another_scan_is_refused(model) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        Predictor(model, device="cpu").predict(np.zeros((1, 50, 50), np.uint8), "t", region=TISSUE)
    assert crop_window(Region(0, 0, 50, 50), (50, 50)) is None  # the whole frame: no crop


@pytest.mark.skipif(
    importlib.util.find_spec("data_store") is None, reason="pydicom-data is not installed"
)
def test_obxxxx1a_region_is_read_from_its_header() -> None:
    """pydicom-data's Philips OB still: a 2-D tissue region below the header, and an ECG-like
    waveform region (RegionSpatialFormat 4) that is not the image."""
    spec = importlib.util.find_spec("data_store")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "data" / "OBXXXX1A.dcm"
    if not path.is_file():
        pytest.skip("pydicom-data has no OBXXXX1A.dcm")
    frames, meta = read_scan(path)
    assert frames.shape[1:3] == (600, 800)
    assert meta.region == Region(60, 120, 519, 800, "dicom")


# -- detection -----------------------------------------------------------------------------


def test_detected_region_leaves_out_a_burned_in_text_strip(rng) -> None:
    frames = np.stack([screen(rng) for _ in range(3)])
    region = detect_region(frames)
    assert region is not None and region.source == "detected"
    assert region.y0 > 12  # below the text strip
    assert region.y0 <= TISSUE.y0 and region.x0 <= TISSUE.x0  # all the tissue is inside
    assert region.y1 >= TISSUE.y1 and region.x1 >= TISSUE.x1


def test_read_scan_detects_the_region_of_a_png_when_asked(tmp_path, rng) -> None:
    from PIL import Image

    Image.fromarray(screen(rng)).save(tmp_path / "scan.png")
    _, meta = read_scan(tmp_path / "scan.png", detect_region=True)
    assert meta.region is not None and meta.region.source == "detected"
    _, meta = read_scan(tmp_path / "scan.png")
    assert meta.region is None


def test_full_frame_tissue_keeps_the_whole_frame(rng) -> None:
    assert detect_region(speckle(rng, (2, H, W))) is None
    nearly = np.zeros((H, W), np.uint8)
    nearly[2:, 2:] = speckle(rng, (H - 2, W - 2))  # a thin border: not worth a crop
    assert detect_region(nearly) is None


def test_two_images_side_by_side_are_both_kept(rng) -> None:
    frame = np.zeros((H, W), np.uint8)
    frame[20:110, 5:75] = speckle(rng, (90, 70))
    frame[20:110, 85:155] = speckle(rng, (90, 70))
    region = detect_region(frame)
    assert region is None or (region.x0 <= 5 and region.x1 >= 155)


def test_dark_fluid_splitting_the_image_does_not_crop_tissue(rng) -> None:
    """A near-black cyst across the image: the tissue beyond it stays in the box."""
    frame = np.zeros((H, W), np.uint8)
    frame[TISSUE.slices] = speckle(rng, TISSUE.shape)
    frame[50:90, 20:150] = rng.integers(0, 3, (40, 130))  # anechoic fluid, wall to wall
    region = detect_region(frame)
    assert region is not None
    assert region.y0 <= TISSUE.y0 and region.y1 >= TISSUE.y1


# -- store ---------------------------------------------------------------------------------


def test_the_store_keeps_the_region_and_old_projects_read_as_whole_frame(tmp_path, rng) -> None:
    path = write_dicom(tmp_path / "us.dcm", screen(rng), [us_region(20, 30, 149, 109)])
    with Project.create(tmp_path / "p.zarr") as project:
        scan_id = project.add_file(path)
        plain = project.add_scan(speckle(rng, (1, 40, 40)), "plain")
        assert project.scan(scan_id).region == TISSUE
        assert project.scan(plain).region is None
    attrs_file = tmp_path / "p.zarr" / "scans" / scan_id / "zarr.json"
    doc = json.loads(attrs_file.read_text())
    assert doc["attributes"]["region"] == {"rows": [30, 110], "cols": [20, 150], "source": "dicom"}
    del doc["attributes"]["region"]  # as a project written before regions were stored
    attrs_file.write_text(json.dumps(doc))
    with Project.open(tmp_path / "p.zarr", read_only=True) as project:
        assert project.scan(scan_id).region is None


def test_predict_scan_uses_the_stored_region(tmp_path, rng) -> None:
    from propl.annotation import predict_scan

    path = write_dicom(tmp_path / "us.dcm", screen(rng), [us_region(20, 30, 149, 109)])
    task = "thyroid_nodule"  # a task of the default project
    predictor = spy(build_model("propl-small", tasks=(task,), input_size=64, pretrained=False))
    with Project.create(tmp_path / "p.zarr") as project:
        scan_id = project.add_file(path)
        pred = predict_scan(project, predictor, scan_id, task)
    assert predictor.seen[0].shape == (1, *TISSUE.shape)
    assert pred.mask.shape == (1, H, W) and not pred.uncertainty[0, : TISSUE.y0].any()


# -- clicks and propagation ----------------------------------------------------------------


def test_refiner_encodes_the_crop_and_shifts_clicks_into_it(rng, model) -> None:
    frame = screen(rng)
    predictor = spy(model)
    refiner = Refiner(predictor, frame, "t", region=TISSUE)
    assert predictor.seen[0].shape == (1, *TISSUE.shape)
    mask = np.ones((H, W), np.uint8)  # the start mask: outside the region it is dropped
    out, prob = refiner.refine(mask, [Click(70, 80)], box=(40, 30, 100, 140), threshold=0.0)
    assert out.shape == prob.shape == (H, W)
    assert out[TISSUE.slices].all() and out.sum() == TISSUE.shape[0] * TISSUE.shape[1]
    # the same click on the crop alone gives the same result
    alone = Refiner(Predictor(model, device="cpu"), frame[TISSUE.slices], "t")
    shifted = Click(70 - TISSUE.y0, 80 - TISSUE.x0)
    box = (40 - TISSUE.y0, 30 - TISSUE.x0, 100 - TISSUE.y0, 140 - TISSUE.x0)
    _, p_alone = alone.refine(mask[TISSUE.slices], [shifted], box=box)
    assert np.allclose(prob[TISSUE.slices], p_alone, atol=1e-6)


def test_propagation_uses_the_region(rng, model) -> None:
    frames = np.stack([screen(rng) for _ in range(3)])
    masks = np.zeros((3, H, W), np.uint8)
    masks[1][50:90, 50:100] = 1
    predictor = spy(model)
    out = propagate(predictor, frames, "t", 1, masks, stop_below=0.0, region=TISSUE)
    assert sorted(out.reached) == [0, 2]
    assert all(x.shape == (1, *TISSUE.shape) for x in predictor.seen)
    outside = np.ones((H, W), bool)
    outside[TISSUE.slices] = False
    assert not out.masks[:, outside].any()
