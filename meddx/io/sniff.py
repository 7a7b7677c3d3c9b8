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
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""TIFF and BigTIFF (``+``: 64-bit offsets), in either byte order. TIFF loses to "DICM" at 128:
dual-personality files put a TIFF header in the DICOM preamble on purpose."""
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
_BARE_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
"""The groups a data set without preamble may start with: file meta, identification, patient, acquisition,
relationship, image pixel (a data set stripped of its first groups still starts at one of these)."""


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (at least 132 are needed for DICOM).

    Args:
        head: The start of the file.

    The file's own signature is read first: a PNG, JPEG, GIF, WebP or BMP that happens to hold "DICM" at
    byte 128 is that image, not a DICOM file; a TIFF header there is a DICOM preamble (dual-format files).
    (A DICOM preamble may also start with an image's signature: `meddx.io.load_study` reads such a file as
    DICOM when it does not read as the image.)

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
    """True for a DICOM data set without the 128-byte preamble and 'DICM' marker (pydicom reads it with
    ``force=True``).

    The first element must be in one of `_BARE_FIRST_GROUPS` (little endian, explicit or implicit VR, or
    explicit VR big endian), and the element headers that fit in `head` must parse with ascending tags; at
    least two are required.
    """
    return any(_parses_as_data_set(head, endian) for endian in "<>")


def _parses_as_data_set(head: bytes, endian: str) -> bool:
    pair, single, long = endian + "HH", endian + "H", endian + "I"
    if len(head) < 8 or struct.unpack_from(single, head)[0] not in _BARE_FIRST_GROUPS:
        return False
    explicit = head[4:6] in _EXPLICIT_VRS
    if endian == ">" and not explicit:  # implicit VR is always little endian
        return False
    offset, previous, parsed = 0, -1, 0
    while offset + 8 <= len(head):
        group, element = struct.unpack_from(pair, head, offset)
        tag = group << 16 | element
        if tag <= previous:
            return False
        if not explicit:
            header, length = 8, struct.unpack_from(long, head, offset + 4)[0]
        elif head[offset + 4 : offset + 6] not in _EXPLICIT_VRS:
            return False
        elif head[offset + 4 : offset + 6] in _LONG_VRS:
            if offset + 12 > len(head):
                break
            header, length = 12, struct.unpack_from(long, head, offset + 8)[0]
        else:
            header, length = 8, struct.unpack_from(single, head, offset + 6)[0]
        parsed += 1
        if length == _UNDEFINED_LENGTH:
            break
        offset, previous = offset + header + length, tag
    return parsed >= 2
