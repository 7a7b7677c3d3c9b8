"""DICOM through pydicom: modality LUT, VOI LUT or window, MONOCHROME1 inversion, compressed syntaxes.

How a monochrome film is displayed (`meddx.io.dicom_display`), in order:

1. Modality LUT: the first item of the Modality LUT Sequence, else RescaleSlope and RescaleIntercept. An
   item that is empty, incomplete or cannot be applied is ignored with a warning (the film is still read:
   the stored values are what the modality measured).
2. VOI: the file's first VOI LUT, else its first window (WindowCenter, WindowWidth, VOILUTFunction). The
   file's choice is kept whenever it shows the film: a radiographer chose it. It is replaced by an automatic
   window, with a warning, when it cannot be applied (a zero width, a damaged LUT), or when it turns the
   film into (nearly) one shade (fewer than 8 gray levels between the 0.5th and 99.5th percentile) while an
   automatic window would not: a stored window far from the pixel values (centre 2725, width 5310 on values
   32,744-65,535) would otherwise send a blank image to the model.
3. Automatic window (no VOI in the file, or one of the cases above): the 0.5th to 99.5th percentile of the
   frame's modality values.
4. MONOCHROME1 is inverted, so that bone is bright.

Besides the file meta group, only the whitelisted, non-identifying tags (`_DICOM_TAGS`) are parsed from
the file, so patient names, IDs, dates and the like never reach `ImageInfo`. Of the patient module age
and sex are read into `Study.demographics`, to be compared with the notes. The references and the header
attributes a DICOM SR about the film must repeat (`_SOURCE_TAGS`) go into `Study.source` (`DicomSource`),
which only `meddx.interop` reads, to write DICOM; they never enter a result, a report or a log.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    RE_VALID_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import PersonName

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io.colour import colour_warnings
from meddx.io.dicom_bounds import check_structure, inflate_if_deflated
from meddx.io.dicom_checks import check_frames_in_data, check_pixel_module, check_transfer_syntax
from meddx.io.dicom_display import monochrome_to_uint8
from meddx.io.pixels import luminance, scale_to_uint8
from meddx.io.source import check_dimensions, damaged, decode_errors
from meddx.io.study import Demographics, DicomSource, ImageInfo, Study

# pydicom's value validation warns about *and logs* the offending value, and in a damaged file a wrong
# length can make that value run on into neighbouring tags such as PatientName. meddx reads only a few
# tags and has no use for those messages, so validation on reading is off for this process.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
# pydicom logs every failed decoder attempt as an ERROR with its traceback (`LOGGER.exception`), and once
# anything has configured the root logger (open_clip's module-level `logging.info` calls `basicConfig`)
# that lands on the CLI's stderr and in the app's log. Each failure here becomes an `InputError`, so
# pydicom's records stay with its own handlers (a NullHandler unless `pydicom.config.debug()` is on).
logging.getLogger("pydicom").propagate = False

_DICOM_TAGS = [
    # Image Pixel module: what decoding needs.
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    # Modality LUT and VOI LUT modules: how to display it.
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    # Non-identifying description.
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PixelSpacing",
    "ImagerPixelSpacing",
    # Patient age and sex: kept apart from the description (`Demographics`), only to compare with the notes.
    "PatientAge",
    "PatientSex",
]
# For `DicomSource` only (an SR in the same study repeats them; PS3.3 Patient and General Study modules,
# Type 1 and 2): never read into `ImageInfo`, never logged.
_SOURCE_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientOrientation",
]
_ORIENTATION = re.compile(r"[APRLHF]{1,3}")  # PatientOrientation of a biped, e.g. L\\F
_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_AGE_STRING = re.compile(r"\d{3}[DWMY]")  # DICOM's AS value representation
_RADIOGRAPHY = {"CR", "DX", "DR", "RG"}
_MODALITY_NAMES = {
    "CT": "a CT image",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "MG": "a mammogram",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "XA": "an angiography image",
    "RF": "a fluoroscopy image",
    "IO": "an intra-oral dental image",
    "PX": "a panoramic dental image",
}
_OTHER_PHOTOMETRICS = {  # named in messages; any other value from the file is not echoed
    "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
}  # fmt: skip
_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")
# The values each whitelisted code string may take (PS3.3 defined terms); anything else from the file is
# dropped, so a name typed into a tag ("DOE JANE" as ViewPosition) never reaches a result or report.
_DEFINED_TERMS = {
    "ViewPosition": frozenset({"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO"}),
    "Modality": frozenset({
        "CR", "DX", "DR", "RG", "CT", "MR", "US", "MG", "NM", "PT", "XA", "RF", "IO", "PX", "OT", "SC",
        "ES", "XC", "OP", "GM", "SM", "TG", "BI", "DG", "HC", "LS", "OCT", "OPT", "IVUS", "RTIMAGE", "PR",
        "SR", "KO", "DOC",
    }),
    "BodyPartExamined": frozenset({
        "CHEST", "THORAX", "LUNG", "HEART", "RIB", "STERNUM", "CLAVICLE", "SHOULDER", "ABDOMEN", "PELVIS",
        "CHESTABDOMEN", "CHESTABDPELVIS", "ABDOMENPELVIS", "CHEST_TO_PELVIS", "SKULL", "HEAD", "NECK",
        "HEADNECK", "SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "ARM", "ELBOW", "WRIST", "HAND", "HIP",
        "LEG", "KNEE", "ANKLE", "FOOT", "EXTREMITY", "BREAST", "WHOLEBODY",
    }),
    "PhotometricInterpretation": frozenset({"MONOCHROME1", "MONOCHROME2"} | _OTHER_PHOTOMETRICS),
}  # fmt: skip


def load_dicom(data: bytes, label: str, limits: Limits, *, has_preamble: bool) -> Study:
    """Decode the first frame of a DICOM file, reading only the whitelisted tags.

    Before pydicom parses anything, a deflated data set is inflated within ``limits.max_inflated_bytes``
    and the structure is walked within the element, item and nesting limits (`meddx.io.dicom_bounds`).
    """
    layout = inflate_if_deflated(data, label, limits, has_preamble=has_preamble)
    check_structure(layout, label, limits)
    with decode_errors(damaged(label)):
        # force=True only for files whose data set `sniff_format` already parsed without a preamble.
        ds = dcmread(
            io.BytesIO(layout.data), force=not has_preamble, specific_tags=_DICOM_TAGS + _SOURCE_TAGS
        )
        check_pixel_module(ds, label)
        transfer_syntax = _transfer_syntax(ds)
        check_transfer_syntax(transfer_syntax, label)
        decode_failed = _decode_failure(label, transfer_syntax)
        width, height, frames = int(ds.Columns), int(ds.Rows), _frame_count(ds)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits_stored = int(ds.get("BitsStored") or ds.BitsAllocated)
        photometric = _code_string(ds, "PhotometricInterpretation")
        # An unknown modality is not shown, but it still gets the "not CR or DX" warning.
        any_modality = _code_string(ds, "Modality", defined_terms=False)
        description = {
            "modality": _code_string(ds, "Modality"),
            "view_position": _code_string(ds, "ViewPosition"),
            "body_part": _code_string(ds, "BodyPartExamined"),
            "pixel_spacing": _pixel_spacing(ds),
        }
        demographics = _demographics(ds)
        source = _source(ds)
    check_dimensions(width, height, label, limits)
    with decode_errors(damaged(label)):
        check_frames_in_data(ds, transfer_syntax, frames, label)
    if frames > limits.max_frames:
        raise InputError(
            f"{label} holds {frames:,} frames, more than the {limits.max_frames:,} meddx reads, so it was "
            "not read; please upload the chest film on its own."
        )
    if samples != 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        stored_as = (
            photometric if photometric in _OTHER_PHOTOMETRICS else "an unknown photometric interpretation"
        )
        raise InputError(
            f"{label} stores its image as {stored_as}, which meddx does not support. Please export it as "
            "MONOCHROME2 or RGB, or as PNG."
        )
    with decode_errors(decode_failed):
        frame = pixel_array(ds, index=0)
    if frame.dtype.kind == "f":
        frame = _finite(frame, label)
    warnings: list[str] = []
    with decode_errors(damaged(label)):
        if samples == 3:
            pixels = _rgb_to_uint8(frame, bits_stored)
            warnings.extend(colour_warnings(frame, full_scale=2.0**bits_stored - 1))
        else:
            pixels = monochrome_to_uint8(frame, ds, invert=photometric == "MONOCHROME1", warnings=warnings)
    if frames > 1:
        warnings.append(f"Multi-frame DICOM: only the first of {frames} frames was analysed.")
    warnings.extend(_modality_warnings(any_modality))
    info = ImageInfo.of(
        "dicom",
        pixels,
        bits_stored=bits_stored,
        photometric_interpretation=photometric,
        frames=frames,
        transfer_syntax=DeflatedExplicitVRLittleEndian.name if layout.deflated else transfer_syntax.name,
        **description,
    )
    return Study(pixels=pixels, info=info, warnings=warnings, demographics=demographics, source=source)


def _valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and re.fullmatch(RE_VALID_UID, uid) is not None


def _source(ds: Dataset) -> DicomSource | None:
    """The film's references and the header an SR must repeat; None unless all four UIDs are valid.

    Values are kept as the file holds them (person names as their string form); a value of another type
    (a damaged element) is left out rather than repaired, and nothing is invented.
    """
    uids = {keyword: ds.get(keyword) for keyword in _UID_KEYWORDS}
    if not all(isinstance(uid, str) and _valid_uid(uid.strip()) for uid in uids.values()):
        return None
    attributes: dict = {keyword: str(uid).strip() for keyword, uid in uids.items()}
    for keyword in _SOURCE_TAGS:
        value = ds.get(keyword)
        if keyword in attributes or value is None:
            continue
        if isinstance(value, PersonName):
            value = str(value)
        if isinstance(value, str) or (keyword == "SpecificCharacterSet" and isinstance(value, list)):
            attributes[keyword] = value if isinstance(value, str) else [str(v) for v in value]
    attributes.pop("PatientOrientation", None)
    orientation = ds.get("PatientOrientation")
    if (
        orientation is not None
        and len(orientation) == 2
        and all(_ORIENTATION.fullmatch(str(v)) for v in orientation)
    ):
        attributes["PatientOrientation"] = [str(v) for v in orientation]
    attributes["PatientSex"] = ds.get("PatientSex") if isinstance(ds.get("PatientSex"), str) else ""
    attributes["Modality"] = _code_string(ds, "Modality") or "OT"
    attributes["Rows"], attributes["Columns"] = int(ds.Rows), int(ds.Columns)
    return DicomSource(attributes)


def _demographics(ds: Dataset) -> Demographics | None:
    """PatientAge and PatientSex when well formed; anything else in those tags is dropped, never shown."""
    age, sex = ds.get("PatientAge"), ds.get("PatientSex")
    age = age.strip().upper() if isinstance(age, str) else ""
    sex = sex.strip().upper() if isinstance(sex, str) else ""
    found = Demographics(
        age=age if _AGE_STRING.fullmatch(age) else None, sex=sex if sex in ("M", "F", "O") else None
    )
    return found if found.age or found.sex else None


def _transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax, inferred from the encoding when a bare data set has no file meta."""
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little_endian = ds.original_encoding
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    return ds.file_meta.TransferSyntaxUID


def _decode_failure(label: str, transfer_syntax: UID) -> str:
    """The message for pixel data that cannot be decoded: name the compression, if any (the transfer syntax
    is one pydicom knows: `check_transfer_syntax`)."""
    if not transfer_syntax.is_encapsulated:
        return damaged(label)
    return (
        f"{label} is compressed with {transfer_syntax.name}, which could not be decoded. Please export it "
        "uncompressed or as PNG."
    )


def _frame_count(ds: Dataset) -> int:
    return max(1, int(ds.get("NumberOfFrames") or 1))


def _rgb_to_uint8(frame: np.ndarray, bits_stored: int) -> np.ndarray:
    """Luminance of an RGB frame (pydicom has already converted YBR to RGB), scaled from BitsStored."""
    return scale_to_uint8(luminance(frame.astype(np.float32)), 0.0, 2.0**bits_stored - 1)


def _finite(frame: np.ndarray, label: str) -> np.ndarray:
    """Float Pixel Data with NaN and infinities clipped to the finite range (all non-finite: damaged)."""
    finite = np.isfinite(frame)
    if finite.all():
        return frame
    if not finite.any():
        raise InputError(damaged(label))
    values = frame[finite]
    return np.nan_to_num(
        frame, nan=float(values.min()), posinf=float(values.max()), neginf=float(values.min())
    )


def _code_string(ds: Dataset, keyword: str, *, defined_terms: bool = True) -> str | None:
    """The tag's value if it is a single DICOM code string among the tag's defined terms, else None.

    Shape first (CS: at most 16 upper-case letters, digits, spaces and underscores), then the defined terms:
    a value that is anything else is untrusted text and is dropped, never shown.
    """
    value = ds.get(keyword)
    if value is None or not isinstance(value, str):
        return None
    text = value.strip().upper()
    if not _CODE_STRING.fullmatch(text):
        return None
    terms = _DEFINED_TERMS.get(keyword) if defined_terms else None
    return text if terms is None or text in terms else None


def _pixel_spacing(ds: Dataset) -> list[float] | None:
    """Row and column spacing in mm from PixelSpacing, else ImagerPixelSpacing; None if unusable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            spacing = [float(v) for v in value]
        except (TypeError, ValueError):
            continue
        if len(spacing) == 2 and all(np.isfinite(spacing)) and min(spacing) > 0:
            return spacing
    return None


def _modality_warnings(modality: str | None) -> list[str]:
    if modality is None or modality in _RADIOGRAPHY:
        return []
    what = _MODALITY_NAMES.get(modality, "an image whose modality is not CR or DX")
    message = (
        f"This is {what}; meddx is designed for chest radiographs (CR or DX), so its findings may not "
        "apply to this image."
    )
    return [message]
