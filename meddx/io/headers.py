"""What a raster file's header says, when it explains a refusal better than "damaged".

- `jpeg_encoding`: the JPEG process named by the frame header (SOFn). Pillow decodes 8-bit JPEG only
  (baseline, extended, progressive, lossless, arithmetic-coded); a 12- or 16-bit, hierarchical or JPEG-LS
  file is an encoding meddx's image reader does not decode, and is refused in those words, never as
  damaged (`undecodable_jpeg`).
- `corrupt_bmp_header`: an uncompressed BMP must hold every row it declares; a header that claims many times
  more pixel data than the file holds is corrupt, not a large image.
"""

from __future__ import annotations

import struct

from PIL import BmpImagePlugin

from meddx.io.source import format_bytes

_SOF_NAMES = {  # JPEG processes, named as a PACS or an exporter names them
    0xC0: "a baseline JPEG",
    0xC1: "an extended JPEG",
    0xC2: "a progressive JPEG",
    0xC3: "a lossless JPEG",
    0xC5: "a hierarchical JPEG",
    0xC6: "a hierarchical JPEG",
    0xC7: "a lossless hierarchical JPEG",
    0xC9: "an arithmetic-coded JPEG",
    0xCA: "an arithmetic-coded JPEG",
    0xCB: "a lossless arithmetic-coded JPEG",
    0xCD: "an arithmetic-coded hierarchical JPEG",
    0xCE: "an arithmetic-coded hierarchical JPEG",
    0xCF: "a lossless arithmetic-coded hierarchical JPEG",
    0xF7: "a JPEG-LS file",
}
_UNDECODED_SOFS = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF, 0xF7})
"""What Pillow (libjpeg-turbo 3) never decodes: hierarchical JPEG and JPEG-LS; nor any precision but 8 bits
(Pillow refuses other precisions itself). 8-bit lossless and arithmetic-coded JPEG it does decode."""
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length
_CORRUPT_FACTOR = 4
"""A BMP whose declared pixel data is this many times the file's size has a corrupt header (a file cut short
holds less than it declares too, but not a fraction of it)."""


def jpeg_encoding(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, sample precision in bits) of a JPEG file's first frame header; None if there is none."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan or end of image before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            return (marker, data[pos + 4]) if pos + 4 < len(data) else None
        pos += 2 + length
    return None


def undecodable_jpeg(data: bytes, label: str) -> str | None:
    """The refusal for a JPEG whose encoding Pillow does not decode, naming it; None for one it does."""
    found = jpeg_encoding(data)
    if found is None:
        return None
    marker, bits = found
    if bits == 8 and marker not in _UNDECODED_SOFS:
        return None
    what = _SOF_NAMES.get(marker, "a JPEG")
    if bits != 8 and marker != 0xF7:
        what = f"{what} with {bits}-bit samples"
    return (
        f"{label} is {what}, an encoding meddx cannot read from a JPEG file. Please export the image as "
        "PNG (16-bit PNG keeps every gray level) or as DICOM."
    )


def corrupt_bmp_header(image: BmpImagePlugin.BmpImageFile, file_bytes: int, label: str) -> str | None:
    """The refusal for an uncompressed BMP whose header declares far more pixel data than the file holds."""
    if not image.tile or image.tile[0].codec_name != "raw":
        return None
    stride = image.tile[0].args[1] if len(image.tile[0].args) > 1 else 0
    declared = int(stride) * image.size[1]
    if declared <= _CORRUPT_FACTOR * file_bytes:
        return None
    width, height = image.size
    return (
        f"{label} has a corrupt header: it claims {width}x{height} pixels ({format_bytes(declared)} of "
        f"pixel data), but the whole file holds {format_bytes(file_bytes)}. Please export the image again."
    )
