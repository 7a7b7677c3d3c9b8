"""What in a DICOM header stops a read, said in words a clinician or PACS administrator can act on.

Each check runs on the data set pydicom parsed (the whitelisted tags only) before any pixel is decoded, and
raises `InputError` with one line naming the file and what to export instead:

- `check_pixel_module`: no pixel data at all, or Image Pixel attributes that decoding needs are missing
  (named, with their tags);
- `check_transfer_syntax`: an encoding pydicom does not know (Deflated Image Frame Compression, JPEG XL) or
  one whose decoder is not installed: named, never called damaged;
- `check_frames_in_data`: a header that claims more frames than its pixel data holds (a file of one frame
  whose header says 100,000) disagrees with its data; it is not a multi-frame study.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from meddx.errors import InputError

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FLOAT_BYTES = {"FloatPixelData": 4, "DoubleFloatPixelData": 8}
_REQUIRED = {  # what pydicom needs to decode each kind of pixel data, with the tags a PACS shows
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "BitsAllocated": "(0028,0100)",
    "PhotometricInterpretation": "(0028,0004)",
}
_REQUIRED_INTEGER = {"PixelRepresentation": "(0028,0103)"}
_NEWER_SYNTAXES = {  # standard transfer syntaxes newer than pydicom 3.0's dictionary
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}
_STANDARD_ROOT = "1.2.840.10008."
"""UIDs under DICOM's own root name standard things, never a patient or a site: safe to show."""
EXPORT_INSTEAD = (
    "Please export it from the PACS as Explicit VR Little Endian (uncompressed), JPEG 2000 or JPEG "
    "Lossless, or as PNG."
)


def check_pixel_module(ds: Dataset, label: str) -> None:
    """Refuse a data set without pixel data, or without the Image Pixel attributes decoding needs."""
    present = [keyword for keyword in PIXEL_KEYWORDS if keyword in ds]
    if not present:
        raise InputError(
            f"{label} has no image (pixel data): it may be a DICOM report, a structured document or a "
            "presentation state. Please upload the image itself."
        )
    required = dict(_REQUIRED, **(_REQUIRED_INTEGER if present[0] == "PixelData" else {}))
    missing = [f"{keyword} {tag}" for keyword, tag in required.items() if ds.get(keyword) in (None, "")]
    if missing:
        listed = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        raise InputError(
            f"{label} holds pixel data but its image description is incomplete: it lacks {listed}, so the "
            "image cannot be decoded. Please export the image again from the PACS or the modality."
        )


def syntax_name(uid: str) -> str:
    """How a transfer syntax is named in a message: its standard name, or its UID under DICOM's root."""
    if uid in _NEWER_SYNTAXES:
        return _NEWER_SYNTAXES[uid]
    known = UID(uid)
    if known.is_transfer_syntax:
        return known.name
    if uid.startswith(_STANDARD_ROOT):
        return f"the transfer syntax {uid}"
    return "a private transfer syntax"


def check_transfer_syntax(uid: UID, label: str) -> None:
    """Refuse an encoding pydicom does not know, or one whose decoder is not installed here."""
    if uid.is_transfer_syntax and (not uid.is_encapsulated or _decodable(uid)):
        return
    raise InputError(
        f"{label} is encoded with {syntax_name(str(uid))}, an encoding meddx cannot decode. {EXPORT_INSTEAD}"
    )


def _decodable(uid: UID) -> bool:
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def check_frames_in_data(ds: Dataset, uid: UID, frames: int, label: str) -> None:
    """Refuse a header that claims more frames than the pixel data holds (counted without decoding)."""
    if frames <= 1:
        return
    held = _frames_held(ds, uid)
    if held is None or held >= frames:
        return
    raise InputError(
        f"{label} says it holds {frames:,} frames, but its pixel data holds {held:,}: the header disagrees "
        "with the data, so meddx did not read it. Please export the image again from the PACS or the "
        "modality."
    )


def _frames_held(ds: Dataset, uid: UID) -> int | None:
    """How many frames the pixel data can hold: whole frames of native data, fragments of encapsulated
    data (each frame takes at least one); None when it cannot be told."""
    keyword = next(keyword for keyword in PIXEL_KEYWORDS if keyword in ds)
    value = ds[keyword].value
    if not isinstance(value, bytes | bytearray):
        return None
    if uid.is_encapsulated:
        try:
            items, _ = parse_fragments(value)
        except (ValueError, TypeError):
            return None
        return max(items - 1, 0)  # the first item is the Basic Offset Table
    samples = int(ds.get("SamplesPerPixel") or 1)
    pixels = int(ds.Rows) * int(ds.Columns) * samples
    bits = 8 * _FLOAT_BYTES[keyword] if keyword in _FLOAT_BYTES else int(ds.BitsAllocated)
    if pixels <= 0 or bits <= 0:
        return None
    return len(value) * 8 // (pixels * bits)
