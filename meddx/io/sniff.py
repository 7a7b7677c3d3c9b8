"""The format of an upload, decided by its content (never by its name), and what to say when it is wrong."""

from __future__ import annotations

import re
import struct

from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

ACCEPTED_FORMATS = "meddx accepts PNG, JPEG, BMP, TIFF, WebP and DICOM chest X-rays."
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
"""File-name suffixes an upload form offers (a hint for people: the format is still read from the content)."""
IMAGE_SUFFIXES = frozenset({*UPLOAD_SUFFIXES, ".gif", ""})
"""Suffixes a folder scan (the CLI, training data) picks up; DICOM files often have none."""
SNIFF_BYTES = 1024
"""How much of the file `sniff_format` looks at."""

_MAGIC = (  # formats whose signature no DICOM preamble carries in practice: they win over "DICM" at 128
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
"""TIFF loses to "DICM" at 128: dual-personality files put a TIFF header in the DICOM preamble on purpose."""
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_OTHER_FORMATS = (  # content people upload by mistake: name it in the message
    (re.compile(rb"\A%PDF-"), "a PDF document"),
    (re.compile(rb"\APK\x03\x04"), "a ZIP archive"),
    (re.compile(rb"\A\s*<(?:[^\x00]*?<)?svg\b", re.IGNORECASE), "an SVG drawing"),
    (re.compile(rb"\A....ftyp(heic|heix|mif1|msf1|avif)", re.DOTALL), "an HEIC/AVIF photo"),
)

_EXPLICIT_VRS = frozenset(vr.encode() for vr in STANDARD_VR)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)  # VRs with a 4-byte length
_UNDEFINED_LENGTH = 0xFFFFFFFF


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (at least 132 are needed for DICOM).

    Args:
        head: The start of the file.

    The file's own signature is read first: a PNG, JPEG, GIF, WebP or BMP that happens to hold "DICM" at
    byte 128 is that image, not a DICOM file; a TIFF header there is a DICOM preamble (dual-format files).

    Returns:
        "dicom", "png", "jpeg", "bmp", "tiff", "webp" or "gif"; None for anything else (SVG, PDF, text).
    """
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES:
        return "bmp"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_TIFF_MAGIC):
        return "tiff"
    if _looks_like_bare_dicom(head):
        return "dicom"
    return None


def other_format_hint(data: bytes) -> str:
    """' (it looks like a PDF document)' for common wrong uploads, else ''."""
    head = data[:SNIFF_BYTES]
    for pattern, description in _OTHER_FORMATS:
        if pattern.match(head):
            return f" (it looks like {description})"
    return ""


def _looks_like_bare_dicom(head: bytes) -> bool:
    """True for a DICOM data set without the 128-byte preamble and 'DICM' marker.

    The first element must be in group 0002 or 0008 (little endian, explicit or implicit VR), and the
    element headers that fit in `head` must parse with ascending tags; at least two are required.
    """
    if len(head) < 8 or struct.unpack_from("<H", head)[0] not in (0x0002, 0x0008):
        return False
    explicit = head[4:6] in _EXPLICIT_VRS
    offset, previous, parsed = 0, -1, 0
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        tag = group << 16 | element
        if tag <= previous:
            return False
        if not explicit:
            header, length = 8, struct.unpack_from("<I", head, offset + 4)[0]
        elif head[offset + 4 : offset + 6] not in _EXPLICIT_VRS:
            return False
        elif head[offset + 4 : offset + 6] in _LONG_VRS:
            if offset + 12 > len(head):
                break
            header, length = 12, struct.unpack_from("<I", head, offset + 8)[0]
        else:
            header, length = 8, struct.unpack_from("<H", head, offset + 6)[0]
        parsed += 1
        if length == _UNDEFINED_LENGTH:
            break
        offset, previous = offset + header + length, tag
    return parsed >= 2
