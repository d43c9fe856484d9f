"""What a DICOM header says, and how its pixels are decoded and coloured.

:func:`dicom_header` turns a pydicom ``Dataset`` into a JSON-serialisable dict (keyword ->
value) and, by default, drops what identifies the patient, the people and the place, in the
spirit of the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.
:func:`decode_pixels` applies what the header says about the pixels (transfer syntax,
photometric interpretation, palette). :func:`propl.data.readers.read_scan` uses both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..region import Region
from .readers import ReaderError, warn_file

JPEG_HINT = "pip install pylibjpeg pylibjpeg-libjpeg (and pylibjpeg-openjpeg for JPEG 2000)"

# Dropped unless keep_phi=True: identifying attributes of the PS3.15 Table E.1-1 basic profile
# that are plain values (sequences are dropped anyway, see _KEPT_SEQUENCES). Every person name
# (VR PN), date and time (DA, DT, TM) and instance UID outside KEPT_UIDS goes too, by VR.
PHI_KEYWORDS: frozenset[str] = frozenset(
    {
        # the patient: identity, contacts, characteristics and history
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "TypeOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "PatientAge",
        "PatientSex",
        "PatientSize",
        "PatientWeight",
        "PatientSexNeutered",
        "EthnicGroup",
        "Occupation",
        "PatientReligiousPreference",
        "MilitaryRank",
        "BranchOfService",
        "MedicalRecordLocator",
        "CountryOfResidence",
        "RegionOfResidence",
        "AdditionalPatientHistory",
        "PatientComments",
        "MedicalAlerts",
        "Allergies",
        "SmokingStatus",
        "PregnancyStatus",
        "LastMenstrualDate",
        "SpecialNeeds",
        "PatientState",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "AdmissionID",
        "IssuerOfAdmissionID",
        "AdmittingDiagnosesDescription",
        "ServiceEpisodeID",
        "ServiceEpisodeDescription",
        "VisitComments",
        # the people who referred, performed, read or ordered the study
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "ConsultingPhysicianName",
        "PhysiciansOfRecord",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "RequestingPhysician",
        "ScheduledPerformingPhysicianName",
        "PersonName",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "ContentCreatorName",
        "OrderEnteredBy",
        "OrderEntererLocation",
        "OrderCallbackPhoneNumber",
        # the place and the device that can locate it
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "DetectorID",
        "GantryID",
        # visit identifiers and free text that often carries names
        "AccessionNumber",
        "StudyID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequest",
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "PerformedProcedureStepDescription",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepDescription",
        "ReasonForTheRequestedProcedure",
        "ReasonForStudy",
        "ImageComments",
        "FrameComments",
        "DerivationDescription",
        "IdentifyingComments",
        "TextComments",
        "TimezoneOffsetFromUTC",
        # dates and times (also dropped by VR; listed as the profile names them)
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "AcquisitionDateTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
    }
)
_REGION_KEYS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
)
PHI_VRS: frozenset[str] = frozenset({"PN", "DA", "DT", "TM"})
# The basic profile replaces instance UIDs; we keep these four because DICOM-SEG export must
# reference the source study, series, instance and frame of reference. UIDs are not names, but
# they link records: other instance UIDs are dropped by default (class UIDs are kept).
KEPT_UIDS: frozenset[str] = frozenset(
    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"}
)
# Never in the header (keep_phi or not): pixels and other bulk binary values, every sequence
# but those below (their items flattened to plain values), private tags, overlays (60xx) and
# curves (50xx).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# The geometry of each frame (enhanced multi-frame images): a DICOM-SEG of such a source needs
# its plane positions, orientation and pixel spacing, also when the source file is gone.
_GEOMETRY_SEQUENCES: dict[str, Any] = {
    "PlanePositionSequence": {},
    "PlaneOrientationSequence": {},
    "PixelMeasuresSequence": {},
}
# Sequence kept -> the sequences kept inside its items (recursively, same shape).
_KEPT_SEQUENCES: dict[str, Any] = {
    "SequenceOfUltrasoundRegions": {},
    "SharedFunctionalGroupsSequence": _GEOMETRY_SEQUENCES,
    "PerFrameFunctionalGroupsSequence": _GEOMETRY_SEQUENCES,
}
_BULK_GROUPS = (range(0x5000, 0x5100), range(0x6000, 0x6100))
_EXTRA_KEYS = (
    "SOPClassUID",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsStored",
    "SamplesPerPixel",
    "Manufacturer",
    "ManufacturerModelName",
)


def dicom_header(ds: Any, *, keep_phi: bool = False) -> dict[str, Any]:
    """The useful part of a DICOM header as a JSON-serialisable dict, de-identified by default.

    Values become ``str``, ``int``, ``float`` (non-finite -> None) or lists of them; the
    ultrasound region sequence becomes a list of dicts, and so do the shared and per-frame
    functional groups, reduced to each frame's plane position, orientation and pixel measures
    (what a DICOM-SEG needs to reference the frames). Pixel data, other bulk binary values,
    other sequences, private tags, overlays, curves and empty values are left out. Reading the
    header never loads deferred bulk values (pixels, LUT data).

    Args:
        ds: a pydicom ``Dataset`` (read with or without its pixels).
        keep_phi: keep what identifies the patient, the staff and the institution
            (:data:`PHI_KEYWORDS`, person names, dates and times, other instance UIDs).
            By default they are dropped; :data:`KEPT_UIDS` are always kept.

    Returns:
        ``{keyword: value}`` in the dataset's order.
    """
    return _elements(ds, keep_phi=keep_phi, sequences=_KEPT_SEQUENCES)


def _elements(ds: Any, *, keep_phi: bool, sequences: dict[str, Any]) -> dict[str, Any]:
    """The plain values of ``ds`` and, as lists of dicts, the items of its ``sequences``."""
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        if tag.is_private or tag.element == 0 or tag.group == 0x7FE0:
            continue
        if any(tag.group in groups for groups in _BULK_GROUPS):
            continue
        keyword = keyword_for_tag(tag)
        if not keyword:
            continue
        vr = getattr(ds.get_item(tag, keep_deferred=True), "VR", None) or dictionary_VR(tag)
        if not keep_phi and _is_phi(keyword, vr):
            continue
        if vr == "SQ":
            if keyword in sequences:
                inner = sequences[keyword]
                items = [_elements(item, keep_phi=keep_phi, sequences=inner) for item in ds[tag]]
                out[keyword] = items
            continue
        if any(part in _BINARY_VRS for part in vr.split(" or ")):
            continue
        try:
            value = _json_value(ds[tag].value, vr)
        except Exception:  # a malformed value must not stop the rest of the header
            continue
        if value not in (None, "", []):
            out[keyword] = value
    return out


def _is_phi(keyword: str, vr: str) -> bool:
    if keyword in PHI_KEYWORDS or vr in PHI_VRS:
        return True
    return vr == "UI" and keyword not in KEPT_UIDS and not keyword.endswith("ClassUID")


def _json_value(value: Any, vr: str) -> Any:
    """A pydicom value as str/int/float/None or a list of them."""
    if value is None or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):  # MultiValue, list
        return [_json_value(v, vr) for v in value]
    if vr == "AT":
        return str(value)  # a tag, e.g. "(0018,6011)"
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (float, Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def scan_meta_fields(ds: Any, *, keep_phi: bool = False) -> dict[str, Any]:
    """The :class:`~propl.data.readers.ScanMeta` fields a DICOM header fills.

    Args:
        ds: a pydicom ``Dataset``.
        keep_phi: as :func:`dicom_header`.

    Returns:
        ``spacing_mm``, ``frame_time_ms``, ``modality``, ``photometric``, ``extra``,
        ``header`` (:func:`dicom_header`) and ``region`` (:func:`ultrasound_region`) as
        keyword arguments.
    """
    return {
        "spacing_mm": _spacing_mm(ds),
        "region": ultrasound_region(ds),
        "frame_time_ms": _frame_time_ms(ds),
        "modality": str(ds.get("Modality", "")) or None,
        "photometric": str(ds.get("PhotometricInterpretation", "")) or None,
        "extra": _extra(ds),
        "header": dicom_header(ds, keep_phi=keep_phi),
    }


def _spacing_mm(ds: Any) -> tuple[float, float] | None:
    """(row, col) mm per pixel: ultrasound regions (units 3 = cm) first, then PixelSpacing.

    A spacing that is text, not two values, NaN, infinite, zero or negative is ignored with a
    :class:`~propl.data.readers.ReaderWarning` naming the file.
    """
    for keyword, read in (
        ("SequenceOfUltrasoundRegions", _region_spacing),
        ("PixelSpacing", _pixel_spacing),
    ):
        try:
            spacing = read(ds)
        except Exception as exc:  # text, a wrong number of values, a malformed item
            _ignored(ds, f"{keyword} is not a pair of numbers ({exc}): no spacing from it")
            continue
        if spacing is None:
            continue
        if all(math.isfinite(s) and s > 0 for s in spacing):
            return spacing
        _ignored(ds, f"{keyword} gives a spacing of {spacing} mm, not two positive finite numbers")
    return None


def _region_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) mm from the first ultrasound region, when it is calibrated in cm."""
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    r = regions[0]
    if r.get("PhysicalUnitsXDirection") != 3 or r.get("PhysicalUnitsYDirection") != 3:
        return None
    dx, dy = r.get("PhysicalDeltaX"), r.get("PhysicalDeltaY")
    if dx is None or dy is None:
        return None
    return (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0)


def ultrasound_region(ds: Any) -> Region | None:
    """The imaging region: the largest 2-D tissue region of SequenceOfUltrasoundRegions.

    A region counts when its RegionSpatialFormat is 1 (2-D) and its RegionDataType tissue
    (1), colour flow (2) or unset; spectral Doppler, M-mode, waveforms and graphics do not.
    DICOM's Max X1/Y1 are the last column/row (inclusive); one past the frame's edge, as
    some scanners write, is clipped. A region outside the frame or empty is ignored with a
    :class:`~propl.data.readers.ReaderWarning` naming the file.

    Returns:
        A ``"dicom"`` region, or None (no regions, none of tissue, or the whole frame).
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    found: list[Region] = []
    for i, item in enumerate(ds.get("SequenceOfUltrasoundRegions") or []):
        try:
            if not _is_tissue(item) or any(item.get(k) is None for k in _REGION_KEYS):
                continue  # a calibration without a location says nothing of where
            box = [int(item.get(k)) for k in _REGION_KEYS]
        except Exception as exc:  # a malformed value
            _ignored(ds, f"ultrasound region {i + 1} has no usable location ({exc}): ignored")
            continue
        x0, y0, x1, y1 = box[0], box[1], min(box[2] + 1, cols), min(box[3] + 1, rows)
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or box[2] > cols or box[3] > rows:
            _ignored(
                ds,
                f"ultrasound region {i + 1} (x {box[0]}..{box[2]}, y {box[1]}..{box[3]}) is "
                f"empty or outside the {cols}x{rows} frame: ignored",
            )
            continue
        found.append(Region(y0, x0, y1, x1, "dicom"))
    if not found:
        return None
    best = max(found, key=lambda r: r.shape[0] * r.shape[1])
    return None if best.covers((rows, cols)) else best


def _is_tissue(item: Any) -> bool:
    """A 2-D region of tissue or colour flow (an unset data type counts)."""
    spatial, kind = item.get("RegionSpatialFormat"), item.get("RegionDataType")
    if spatial is not None and int(spatial) != 1:
        return False
    if spatial is None and kind is None:
        return False
    return kind is None or int(kind) in (0, 1, 2)


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) mm from PixelSpacing; raises ValueError unless it is two numbers."""
    spacing = ds.get("PixelSpacing")
    if spacing is None or spacing == "":
        return None
    values = [float(s) for s in spacing]
    if len(values) != 2:
        raise ValueError(f"{len(values)} values")
    return (values[0], values[1])


def _ignored(ds: Any, message: str) -> None:
    """Warn that part of the header of ``ds`` (named by its file) is ignored."""
    warn_file(getattr(ds, "filename", None) or "DICOM dataset", message)


def _frame_time_ms(ds: Any) -> float | None:
    """Milliseconds between frames from FrameTime, else CineRate; None when neither is set.

    A value that is text, NaN or infinite is ignored with a warning naming the file; zero
    or negative ones silently.
    """
    frame_time = _positive_number(ds, "FrameTime")
    if frame_time is not None:
        return frame_time
    cine_rate = _positive_number(ds, "CineRate")
    return 1000.0 / cine_rate if cine_rate is not None else None


def _positive_number(ds: Any, keyword: str) -> float | None:
    """The element as a positive finite float; None when absent, empty or not one."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        number = float(value)
    except Exception as exc:  # text, several values
        _ignored(ds, f"{keyword} is not a number ({exc}): ignored")
        return None
    if not math.isfinite(number):
        _ignored(ds, f"{keyword} is {number}: ignored")
        return None
    return number if number > 0 else None


def _extra(ds: Any) -> dict[str, Any]:
    """A few technical attributes (SOP class, size, bit depth, maker, transfer syntax)."""
    extra: dict[str, Any] = {}
    for key in _EXTRA_KEYS:
        value = ds.get(key)
        if value not in (None, ""):
            extra[key] = int(value) if isinstance(value, int) else str(value)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None:
        extra["TransferSyntaxUID"] = str(tsyntax)
    return extra


def decode_pixels(path: str | Path, ds: Any) -> tuple[np.ndarray, int, int]:
    """Decode the pixel data and convert YBR and palette colour to RGB, invert MONOCHROME1.

    Args:
        path: the file ``ds`` was read from, for error messages.
        ds: a pydicom ``Dataset`` with pixel data.

    Returns:
        ``(arr, samples, bits)``: ``(H, W)``/``(F, H, W)`` or ``(..., 3)`` RGB pixels in the
        decoder's dtype, the samples per pixel (1 or 3) and their significant bits.

    Raises:
        ReaderError: no decoder for the transfer syntax, the pixel data cannot be decoded,
            or a palette colour lookup table is missing or shorter than its descriptor.
    """
    from pydicom.pixels import convert_color_space

    arr, photometric = _decode(path, ds)
    samples = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
    if photometric.startswith("YBR"):
        arr = convert_color_space(arr, photometric, "RGB")
    if photometric == "PALETTE COLOR":
        _check_palette(path, ds)
        try:
            arr, samples, bits = palette_to_rgb(arr, ds), 3, 16
        except MemoryError:
            raise
        except Exception as exc:  # a LUT that the checks above let through
            raise ReaderError(path, f"invalid palette colour lookup table ({exc})") from exc
    elif photometric == "MONOCHROME1":
        # unsigned: invert within the stored bit depth; signed: within the data's range
        unsigned = np.issubdtype(arr.dtype, np.unsignedinteger)
        top = (1 << bits) - 1 if unsigned else int(arr.max()) + int(arr.min())
        arr = top - arr.astype(np.int64)
        if unsigned:
            arr = arr.clip(0, None)
    return arr, samples, bits


def _decode(path: str | Path, ds: Any) -> tuple[np.ndarray, str]:
    """Decoded pixels (as RGB when YBR) and the photometric interpretation they are in."""
    from pydicom.pixels import get_decoder

    tsyntax = ds.file_meta.TransferSyntaxUID
    decoder = get_decoder(tsyntax)
    if decoder is None:
        raise ReaderError(path, f"unsupported DICOM transfer syntax {tsyntax.name} ({tsyntax})")
    if not decoder.is_available:
        raise ReaderError(path, f"no decoder installed for {tsyntax.name} pixel data: {JPEG_HINT}")
    try:
        arr, info = decoder.as_array(ds, as_rgb=True)  # type: ignore[arg-type]
    except MemoryError:
        raise
    except Exception as exc:  # pydicom and its plugins raise many types for broken data
        raise ReaderError(path, f"cannot decode the DICOM pixel data ({exc})") from exc
    return arr, str(info.get("photometric_interpretation", ds.PhotometricInterpretation))


def _check_palette(path: str | Path, ds: Any) -> None:
    """Raise unless red, green and blue LUTs each have a descriptor and enough data.

    Raises:
        ReaderError: a LUT or its descriptor is missing, or its data does not hold the
            descriptor's number of 8- or 16-bit entries.
    """
    for colour in ("Red", "Green", "Blue"):
        name = f"{colour}PaletteColorLookupTable"
        desc = ds.get(f"{name}Descriptor")
        if desc is None or isinstance(desc, (str, bytes)) or len(desc) != 3:
            raise ReaderError(path, f"PALETTE COLOR without a valid {name}Descriptor")
        if f"Segmented{name}Data" in ds:
            continue
        data = ds.get(f"{name}Data")
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise ReaderError(path, f"PALETTE COLOR without {name}Data")
        entries = int(desc[0]) or 65536
        if len(data) not in (entries, 2 * entries):
            raise ReaderError(
                path,
                f"{name}Data holds {len(data)} bytes, not the {entries} entries its "
                "descriptor declares",
            )


def palette_to_rgb(arr: np.ndarray, ds: Any) -> np.ndarray:
    """PALETTE COLOR pixels to RGB with the dataset's LUTs (``apply_color_lut``).

    pydicom 3.0 reads (non-segmented) 16-bit LUT data as little endian whatever the transfer
    syntax, so big-endian files get little-endian copies in a dataset that says so.

    Args:
        arr: ``(..., H, W)`` palette indices.
        ds: the pydicom ``Dataset`` holding the palette colour lookup tables.

    Returns:
        ``(..., H, W, 3)`` (or 4 with an alpha LUT) uint8 or uint16 colours.
    """
    from pydicom import Dataset, FileMetaDataset
    from pydicom.pixels import apply_color_lut
    from pydicom.uid import ExplicitVRLittleEndian

    if ds.original_encoding[1] is not False or "RedPaletteColorLookupTableData" not in ds:
        return apply_color_lut(arr, ds)
    luts = Dataset()
    luts.file_meta = FileMetaDataset()
    luts.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for colour in ("Red", "Green", "Blue", "Alpha"):
        desc, data = (
            f"{colour}PaletteColorLookupTableDescriptor",
            f"{colour}PaletteColorLookupTableData",
        )
        if data not in ds:
            continue
        luts[desc] = ds[desc]
        value = bytes(ds[data].value)
        entries = int(ds[desc].value[0]) or 65536
        if len(value) == 2 * entries:
            value = np.frombuffer(value, ">u2").astype("<u2").tobytes()
        luts.add_new(data, "OW", value)
    return apply_color_lut(arr, luts)
