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

**Patient identity stays in the hospital.** By default the SEG is de-identified like the
project store (DICOM PS3.15 Basic Application Level Confidentiality Profile with the Retain
UIDs option): highdicom gets a stand-in for the source that holds only what referencing it
needs (:data:`SEG_SOURCE_KEYS`: study, series, instance and frame of reference UIDs, pixel
grid, frame geometry), the Patient and Study attributes the SEG must carry (Type 2) are
empty, and the SEG says ``PatientIdentityRemoved = YES`` with the method used. Nothing about
the patient, the staff, the institution or the source's equipment is copied. With
``keep_phi=True`` the source's Patient and Study attributes are copied as they are.

The source is the DICOM file when it is still there, else the scan's stored header
(:func:`propl.data.dicom.dicom_header`), which keeps everything in :data:`SEG_SOURCE_KEYS`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
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
# Emptied in a de-identified SEG (PS3.15 Table E.1-1 action Z: zero length).
_EMPTIED_TYPE2 = (*_REQUIRED_TYPE2, "ReferringPhysicianName")
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# All a de-identified SEG takes from its source: what references it, its pixel grid and the
# geometry of its frames. None of these identifies the patient, the staff or the place.
SEG_SOURCE_KEYS: tuple[str, ...] = (
    "SpecificCharacterSet",
    *_REQUIRED_UIDS,
    "Modality",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PatientOrientation",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
DEIDENTIFICATION_METHOD = "ProPL: PS3.15 Basic Profile, Retain UIDs Option"
_DEIDENTIFICATION_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113110", "Retain UIDs Option"),
)
STORED_HEADER = "the scan's stored DICOM header"


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


def _refusal(source: Path | str, reason: str) -> ExportError:
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


def _element_value(keyword: str, value: Any) -> Any:
    """A :func:`~propl.data.dicom.dicom_header` value as pydicom takes it for ``keyword``."""
    from pydicom.datadict import dictionary_VR
    from pydicom.sequence import Sequence
    from pydicom.valuerep import DSfloat

    vr = dictionary_VR(keyword)
    if vr == "SQ":
        return Sequence([dataset_from_header(item) for item in value])
    if vr == "DS":  # re-formatted to fit DS's 16 characters
        if isinstance(value, list):
            return [DSfloat(v, auto_format=True) for v in value]
        return DSfloat(value, auto_format=True)
    return value


def dataset_from_header(header: Mapping[str, Any], keys: Iterable[str] | None = None) -> Any:
    """A pydicom ``Dataset`` of a stored header's ``keys`` (all of them when None).

    Values pydicom does not take back (e.g. a tag stored as text) are left out.

    Args:
        header: ``{keyword: value}`` as :func:`propl.data.dicom.dicom_header` returns.
        keys: the keywords to take, when present.
    """
    from pydicom import Dataset
    from pydicom.datadict import tag_for_keyword

    ds = Dataset()
    for keyword in header if keys is None else keys:
        value = header.get(keyword)
        if value in (None, "", []) or tag_for_keyword(keyword) is None:
            continue
        if keyword == "FrameIncrementPointer" or (isinstance(value, list) and None in value):
            continue  # a tag stored as text; or a list that lost a non-finite number
        try:
            setattr(ds, keyword, _element_value(keyword, value))
        except (ValueError, TypeError, OverflowError, KeyError):
            continue
    return ds


def _stand_in(ds: Any | None, header: Mapping[str, Any] | None, keep_phi: bool) -> Any:
    """What highdicom gets as the source.

    With ``keep_phi``: the source file's dataset as read, or all of the stored header (whose
    Type 2 Patient/Study values are empty where the store did not keep them). Otherwise a
    de-identified stand-in: :data:`SEG_SOURCE_KEYS` only, the Type 2 values empty.
    """
    from .data.dicom import dicom_header

    if keep_phi and ds is not None:
        return ds
    if keep_phi:
        ref = dataset_from_header(header or {})
    else:
        stored = dicom_header(ds) if ds is not None else header or {}
        ref = dataset_from_header(stored, SEG_SOURCE_KEYS)
    for keyword in _EMPTIED_TYPE2:
        if keyword not in ref:
            setattr(ref, keyword, "")
    return ref


def _check_source(source: Path | str, ds: Any, masks: np.ndarray) -> None:
    """ExportError when the source cannot carry a SEG of ``masks``; the reason says why."""
    missing = [k for k in _REQUIRED_UIDS + ("Rows", "Columns") if k not in ds]
    if missing:
        raise _refusal(source, f"it is not a DICOM image: {', '.join(missing)} missing")
    absent = [k for k in _REQUIRED_TYPE2 if k not in ds]
    if absent:
        raise _refusal(
            source,
            f"it lacks the Patient/Study attribute(s) {', '.join(absent)}, which the DICOM "
            "standard requires (Type 2, may be empty) and a SEG that keeps the patient data "
            "copies from its source; export without keeping patient data instead",
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


def _segmentation(ref: Any, masks: np.ndarray, info: SegInfo) -> Any:
    """highdicom's binary SEG of ``masks`` on the source ``ref``, every frame kept."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=[ref],
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


def _complete(seg: Any, ref: Any) -> None:
    """What highdicom leaves out: the General Image module's Patient Orientation (Type 2C:
    required when the image has no Frame of Reference), the source's or empty."""
    if "FrameOfReferenceUID" not in seg and "PatientOrientation" not in seg:
        seg.PatientOrientation = ref.get("PatientOrientation") or None


def mark_deidentified(ds: Any) -> None:
    """Say in ``ds`` that it was de-identified (PS3.15 basic profile, UIDs retained)."""
    from pydicom import Dataset

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    items = []
    for value, meaning in _DEIDENTIFICATION_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items


def dicom_seg_bytes(
    masks: np.ndarray,
    source: Path | None,
    info: SegInfo,
    *,
    header: Mapping[str, Any] | None = None,
    keep_phi: bool = False,
) -> bytes:
    """A binary SEG of ``masks`` (one segment) referencing its source, as file bytes.

    Every frame is kept, empty ones included, so frame ``i`` of the SEG is frame ``i`` of
    the source. The source is read from ``source`` when that file exists, else taken from
    ``header``. The SEG is de-identified unless ``keep_phi`` (see the module's docstring).

    Args:
        masks: ``(F, H, W)`` uint8 in {0, 1}, ``F`` and ``(H, W)`` as the source's.
        source: the DICOM file the masks belong to, or None when it is not available.
        info: segment label, algorithm and equipment to record.
        header: the source's stored header (:func:`propl.data.dicom.dicom_header`), used
            when ``source`` is None or gone.
        keep_phi: copy the source's Patient and Study attributes instead of emptying them.

    Raises:
        ExportError: no source (file or header), not DICOM, does not match the masks, or
            highdicom cannot build a SEG for it; the message names the source and says why.
    """
    if source is not None and (source.is_file() or not header):
        label, ds = str(source), _read_source(source)
    elif header:
        label, ds = STORED_HEADER, None
    else:
        raise ExportError("cannot write a DICOM-SEG: no source DICOM file and no stored header")
    ref = _stand_in(ds, header, keep_phi)
    _check_source(label, ref, masks)
    try:
        seg = _segmentation(ref, masks, info)
        _complete(seg, ref)
        if not keep_phi:
            mark_deidentified(seg)
        buf = io.BytesIO()
        seg.save_as(buf)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise _refusal(label, f"highdicom refused it ({type(exc).__name__}: {exc})") from exc
    return buf.getvalue()
