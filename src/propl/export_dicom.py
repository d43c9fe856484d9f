"""Binary DICOM Segmentation (SEG) bytes for masks of a DICOM source, built with highdicom.

What highdicom (0.28) accepts, and so what this module writes or refuses:

* A **single-frame** source (Ultrasound Image Storage, CR/DX, CT/MR slices, ...) works with or
  without a Frame of Reference. Without one, highdicom leaves out the pixel measures and plane
  position/orientation, and the SEG is tied to the source only by its SOP Instance UID and
  pixel grid; that is what DICOM allows when the source has no Frame of Reference, whose
  module is optional ("U") in the ultrasound IODs.
* A **multi-frame** source works only when it has a Frame of Reference *and* plane positions
  (CT/MR-like volumes): highdicom tells the SEG's frames apart by their position. Ultrasound
  cines (Ultrasound Multi-frame Image Storage) have neither, so highdicom refuses them
  ("Only a single frame is supported when the source image has no Frame of Reference UID";
  highdicom issue #284). The standard could index such frames by Referenced Frame Number,
  but highdicom does not implement that, so we raise :class:`~propl.export.ExportError`.

We never add a Frame of Reference or plane positions the source lacks: a made-up frame of
reference would claim a spatial relation between the cine's frames (which are time points,
not slices) that does not exist.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .export import ExportError

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

# Type 2 attributes (present, possibly empty) of the Patient and General Study modules that
# highdicom copies from the source; it fails with a bare AttributeError when one is absent.
_REQUIRED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
)
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class SegInfo:
    """What the SEG records about the segment and the software that made it."""

    task_label: str
    algorithm_version: str
    algorithm_name: str = "ProPL"
    manufacturer: str = "ProPL"
    manufacturer_model_name: str = "napari-propl"
    device_serial_number: str = "none"
    series_number: int = 300
    series_description: str | None = None
    property_category: Code | None = None
    property_type: Code | None = None

    def __post_init__(self) -> None:
        # LO (Long String) values hold at most 64 characters
        for name in ("task_label", "algorithm_name", "algorithm_version"):
            value = getattr(self, name)
            if not value or len(value) > 64 or "\\" in value:
                raise ValueError(f"{name} must be 1-64 characters without '\\': {value!r}")


def _refusal(source: Path, reason: str) -> ExportError:
    return ExportError(f"cannot write a DICOM-SEG for '{source}': {reason}")


def _read_source(source: Path) -> Any:
    """The source's header (no pixels: highdicom needs only the metadata)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not source.is_file():
        raise _refusal(source, "no such file")
    try:
        return pydicom.dcmread(source, stop_before_pixels=True)
    except InvalidDicomError as exc:
        reason = "not a DICOM file (no 'DICM' marker at byte 128)"
        raise _refusal(source, f"{reason}; a SEG must reference a DICOM image") from exc
    except Exception as exc:  # pydicom raises many types for broken files
        raise _refusal(source, f"cannot read it as DICOM ({exc})") from exc


def _check_source(source: Path, ds: Any, masks: np.ndarray) -> None:
    """ExportError when the source cannot carry a SEG of ``masks``; the reason says why."""
    missing = [k for k in _REQUIRED_UIDS + ("Rows", "Columns") if k not in ds]
    if missing:
        raise _refusal(source, f"it is not a DICOM image: {', '.join(missing)} missing")
    absent = [k for k in _REQUIRED_TYPE2 if k not in ds]
    if absent:
        raise _refusal(
            source,
            f"it lacks the Patient/Study attribute(s) {', '.join(absent)}, which the DICOM "
            "standard requires (Type 2, may be empty) and the SEG copies from its source",
        )
    n_frames = int(ds.get("NumberOfFrames") or 1)
    grid = (n_frames, int(ds.Rows), int(ds.Columns))
    if masks.shape != grid:
        raise _refusal(source, f"masks of shape {masks.shape} do not match its (F, H, W) {grid}")
    if n_frames > 1:
        from highdicom.spatial import get_image_coordinate_system

        if get_image_coordinate_system(ds) is None:
            lacks = (
                "plane positions"
                if "FrameOfReferenceUID" in ds
                else "a Frame of Reference UID (nor plane positions)"
            )
            raise _refusal(
                source,
                f"it has {n_frames} frames and no {lacks}; highdicom can write a SEG for a "
                "source without a Frame of Reference only when it has a single frame, "
                "because it tells the SEG's frames apart by their spatial position. "
                "Export this scan as NIfTI or TIFF instead",
            )


def _segment_description(info: SegInfo) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=info.algorithm_name,
        version=info.algorithm_version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=info.task_label,
        segmented_property_category=info.property_category
        or codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=info.property_type or codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def dicom_seg_bytes(masks: np.ndarray, source: Path, info: SegInfo) -> bytes:
    """A binary SEG of ``masks`` (one segment) referencing ``source``, as file bytes.

    Every frame is kept, empty ones included, so frame ``i`` of the SEG is frame ``i`` of
    the source.

    Args:
        masks: ``(F, H, W)`` uint8 in {0, 1}, ``F`` and ``(H, W)`` as the source's.
        source: the DICOM file the masks belong to.
        info: segment label, algorithm and equipment to record.

    Raises:
        ExportError: the source is missing, not DICOM, does not match the masks, or
            highdicom cannot build a SEG for it; the message names the file and says why.
    """
    import highdicom as hd

    ds = _read_source(source)
    _check_source(source, ds, masks)
    try:
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment_description(info)],
            series_instance_uid=hd.UID(),
            series_number=info.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=info.manufacturer,
            manufacturer_model_name=info.manufacturer_model_name,
            software_versions=f"propl {__version__}",
            device_serial_number=info.device_serial_number,
            series_description=(info.series_description or f"ProPL {info.task_label}")[:64],
            omit_empty_frames=False,
        )
        buf = io.BytesIO()
        seg.save_as(buf)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise _refusal(source, f"highdicom refused it ({type(exc).__name__}: {exc})") from exc
    return buf.getvalue()
