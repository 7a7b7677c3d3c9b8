"""Bad and odd inputs, generated in memory: image and DICOM files, clinical notes and finding lists.

Every factory is deterministic (seeded) and cheap: the "huge" images are headers that *claim* a huge size
(a decompression bomb), so nothing large is ever allocated. `tests/test_bad_inputs.py` holds the table of
cases and what each must produce; `write_corpus` writes the files to a folder for the CLI.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from tests.helpers import chest_dataset

BOMB_SIDE = 20_000
"""The side the decompression-bomb files claim: 400 million pixels, far above the 60 million limit."""


# --- helpers -----------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """An image saved by Pillow in ``fmt``, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def film(height: int = 256, width: int = 224, *, low: int = 60, high: int = 200) -> np.ndarray:
    """A synthetic 8-bit film: a dark field with a bright rectangle (enough contrast, no warning)."""
    pixels = np.full((height, width), low, np.uint8)
    pixels[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = high
    return pixels


def noise(size: int = 128) -> Image.Image:
    """Seeded 8-bit noise: compresses badly, so truncating its file always cuts image data."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8))


def _png_chunk_offset(data: bytes, kind: bytes) -> int:
    offset = 8
    while offset < len(data):
        length, name = struct.unpack_from(">I4s", data, offset)
        if name == kind:
            return offset
        offset += 12 + length
    raise ValueError(f"no {kind!r} chunk")


# --- raster images -----------------------------------------------------------------------------------


def good_png() -> bytes:
    """A valid 8-bit grayscale PNG film (the image behind every notes and findings case)."""
    return encode(Image.fromarray(film()), "PNG")


def zero_bytes() -> bytes:
    return b""


def random_bytes(seed: int, size: int = 4096) -> Callable[[], bytes]:
    """Seeded random bytes (whatever the file name claims)."""
    return lambda: np.random.default_rng(seed).bytes(size)


def truncated_png() -> bytes:
    data = encode(noise(), "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = encode(noise().convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


def png_bad_crc() -> bytes:
    data = bytearray(encode(noise(), "PNG"))
    offset = _png_chunk_offset(bytes(data), b"IDAT")
    length = struct.unpack_from(">I", data, offset)[0]
    data[offset + 8 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(data)


def png_1x1() -> bytes:
    return encode(Image.new("L", (1, 1), 128), "PNG")


def png_thin() -> bytes:
    """16 x 2000 pixels: within the pixel limit, below the smallest side."""
    return encode(Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (2000, 1))), "PNG")


def png_bomb() -> bytes:
    """A 40 x 40 PNG whose IHDR (with a valid CRC) claims 20000 x 20000 pixels."""
    data = bytearray(encode(Image.new("L", (40, 40)), "PNG"))
    header = struct.pack(">II", BOMB_SIDE, BOMB_SIDE) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A 64 x 64 JPEG whose SOF0 frame header claims 20000 x 20000 pixels."""
    data = bytearray(encode(Image.fromarray(film(64, 64)), "JPEG", quality=90))
    offset = data.index(b"\xff\xc0")
    data[offset + 5 : offset + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def png_16bit() -> bytes:
    """16-bit grayscale with a 12-bit range (as many exporters write it)."""
    pixels = film().astype(np.uint16) * 16
    return encode(Image.fromarray(pixels), "PNG")


def jpeg_cmyk() -> bytes:
    cmyk = np.zeros((128, 128, 4), np.uint8)
    cmyk[:, 64:, 3] = 255  # right half: full black ink
    return encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95)


def png_palette_transparent() -> bytes:
    image = Image.new("P", (96, 96), 0)
    image.putpalette([255, 255, 255] * 2 + [0, 0, 0] * 254)
    image.paste(1, (48, 0, 96, 96))  # right half opaque white, left half transparent
    return encode(image, "PNG", transparency=0)


def gif_animated() -> bytes:
    frames = [Image.fromarray(film(96, 96)), Image.new("L", (96, 96), 128), Image.new("L", (96, 96), 0)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def tiff_multipage() -> bytes:
    return encode(
        Image.fromarray(film(96, 96)), "TIFF", save_all=True, append_images=[Image.new("L", (96, 96), 128)]
    )


def jpeg_exif_rotated() -> bytes:
    """Stored 160 wide x 96 tall, with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(film(96, 160)), "JPEG", quality=95, exif=exif)


def webp_lossless() -> bytes:
    return encode(Image.fromarray(film()).convert("RGB"), "WEBP", lossless=True)


def bmp_rgb() -> bytes:
    return encode(Image.fromarray(film()).convert("RGB"), "BMP")


def png_flat() -> bytes:
    return encode(Image.new("L", (128, 128), 90), "PNG")


def png_fully_transparent() -> bytes:
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[..., :3] = 200
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


# --- not images at all -------------------------------------------------------------------------------


def text_file() -> bytes:
    return b"Chest X-ray, PA view. Patient is a 54 year old with cough.\n"


def svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<rect width="64" height="64" fill="black"/><script>alert(1)</script></svg>\n'
    )


def pdf() -> bytes:
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n"


def zip_archive() -> bytes:
    return b"PK\x03\x04" + bytes(26) + b"IMG0001.dcm" + np.random.default_rng(5).bytes(200)


def html_page() -> bytes:
    return b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n"


def heic_photo() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


# --- DICOM -------------------------------------------------------------------------------------------


def dicom_dataset(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int = 1,
    modality: str = "DX",
) -> Dataset:
    """An uncompressed chest film data set with `PLANTED_IDENTIFIERS` in it (12-bit film by default)."""
    if pixels is None:
        pixels = film().astype(np.uint16) * 16
        bits_stored = 12
    return chest_dataset(
        pixels, photometric=photometric, bits_stored=bits_stored, frames=frames, modality=modality
    )


def dicom_bytes(ds: Dataset, *, file_format: bool = True) -> bytes:
    """The data set as a DICOM file (preamble, 'DICM' and file meta), or bare with ``file_format=False``."""
    buffer = io.BytesIO()
    if file_format:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def colour_blocks() -> np.ndarray:
    """96 x 96 RGB: red, green, blue and grey quarters."""
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[:48, :48], rgb[:48, 48:], rgb[48:, :48], rgb[48:, 48:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), 128
    return rgb


def dicom_plain() -> bytes:
    return dicom_bytes(dicom_dataset())


def dicom_monochrome1() -> bytes:
    return dicom_bytes(dicom_dataset(photometric="MONOCHROME1"))


def dicom_without_preamble() -> bytes:
    ds = dicom_dataset()
    del ds.file_meta
    return dicom_bytes(ds, file_format=False)


def dicom_no_pixel_data() -> bytes:
    ds = dicom_dataset()
    del ds.PixelData
    return dicom_bytes(ds)


def dicom_rgb() -> bytes:
    return dicom_bytes(dicom_dataset(colour_blocks(), photometric="RGB"))


def dicom_ybr_full() -> bytes:
    ybr = convert_color_space(colour_blocks(), "RGB", "YBR_FULL")
    return dicom_bytes(dicom_dataset(ybr, photometric="YBR_FULL"))


def dicom_jpeg2000() -> bytes:
    ds = dicom_dataset()
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return dicom_bytes(ds)


def dicom_undecodable_jpeg() -> bytes:
    ds = dicom_dataset(film(64, 64))
    ds.PixelData = encapsulate([b"\xff\xd8 this is not JPEG data " * 8])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return dicom_bytes(ds)


def dicom_multiframe() -> bytes:
    frames = np.stack([film(96, 96), 255 - film(96, 96), np.full((96, 96), 128, np.uint8)])
    return dicom_bytes(dicom_dataset(frames, frames=3))


def dicom_huge_header() -> bytes:
    """Rows and Columns claim 20000 x 20000 (800 MB of pixels); the file holds 112 KB."""
    ds = dicom_dataset()
    ds.Rows = ds.Columns = BOMB_SIDE
    return dicom_bytes(ds)


def dicom_ct_slice() -> bytes:
    hounsfield = np.full((128, 128), -1000, np.int16)
    hounsfield[32:96, 32:96] = 40
    ds = dicom_dataset(hounsfield + 1024, modality="CT")
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 40, 400
    return dicom_bytes(ds)


def dicom_mr() -> bytes:
    return dicom_bytes(dicom_dataset(modality="MR"))


def dicom_truncated() -> bytes:
    data = dicom_plain()
    return data[: len(data) - 20_000]


def dicom_palette_colour() -> bytes:
    return dicom_bytes(dicom_dataset(film(64, 64), photometric="PALETTE COLOR"))


def dicom_bad_window() -> bytes:
    ds = dicom_dataset()
    ds.WindowCenter, ds.WindowWidth = 2048, 0  # a zero-width window is invalid
    return dicom_bytes(ds)


def dicom_zero_rows() -> bytes:
    ds = dicom_dataset()
    ds.Rows = 0
    return dicom_bytes(ds)


# --- bounded work: bombs and walks that cost time or memory inside a library call --------------------


def _deflated(ds: Dataset) -> bytes:
    """``ds`` written as Deflated Explicit VR Little Endian (pydicom deflates on writing)."""
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return dicom_bytes(ds)


def dicom_deflated() -> bytes:
    """A normal film, deflated: read as usual."""
    return _deflated(dicom_dataset())


def dicom_deflate_bomb() -> bytes:
    """About 300 KB that inflate to 300 MB: a private OB element of zeros, above the 256 MB limit.

    Built by deflating the data set without the zeros and splicing in a raw deflate stream of zeros, so
    that nothing large is ever allocated here."""
    ds = dicom_dataset(film(64, 64))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta_only = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    from pydicom.filewriter import write_file_meta_info

    meta_only.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(meta_only, ds.file_meta, enforce_standard=True)
    size = 300 * 2**20
    element = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, size)  # private (0009,1010) OB, 300 MB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(element) + compressor.flush(zlib.Z_FULL_FLUSH)
    # A full flush ends on a byte boundary with no back-references: the 1 MB block can be repeated.
    megabyte = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return meta_only.getvalue() + head + megabyte * 300 + compressor.flush()


def _item(content: bytes = b"") -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _undefined_sequence(tag: tuple[int, int], items: bytes) -> bytes:
    return struct.pack("<HH2sHI", *tag, b"SQ", 0, 0xFFFFFFFF) + items + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _with_private_bytes(raw: bytes) -> bytes:
    """A film whose data set holds ``raw`` (encoded elements) between group 0008 and the pixels."""
    ds = dicom_dataset(film(64, 64))
    ds.add_new(0x00091010, "OB", b"")  # a placeholder, replaced by ``raw`` in the bytes
    data = dicom_bytes(ds)
    placeholder = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 0)
    return data.replace(placeholder, raw, 1)


def dicom_million_items() -> bytes:
    """A private undefined-length sequence of a million empty items (8 MB): pydicom walks them all."""
    return _with_private_bytes(_undefined_sequence((0x0009, 0x1010), _item() * 1_000_000))


def dicom_deep_nesting() -> bytes:
    """Sequences nested 200 deep, each in one item of undefined length."""
    raw = b""
    for _ in range(200):
        raw = _undefined_sequence(
            (0x0009, 0x1010),
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + raw + struct.pack("<HHI", 0xFFFE, 0xE00D, 0),
        )
    return _with_private_bytes(raw)


def tiff_many_pages(pages: int = 100_000) -> Callable[[], bytes]:
    """A TIFF of ``pages`` small pages, written directly (Pillow would take minutes): one 32x32 strip
    shared by every page, one IFD per page."""

    def make() -> bytes:
        entries = [  # tag, type, count, value
            (256, 3, 1, 32), (257, 3, 1, 32), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, 32), (279, 4, 1, 1024),
        ]  # fmt: skip
        ifd_size = 2 + 12 * len(entries) + 4
        first_ifd = 8 + 1024
        out = [struct.pack("<2sHI", b"II", 42, first_ifd), bytes(range(256)) * 4]
        for page in range(pages):
            next_ifd = first_ifd + (page + 1) * ifd_size if page + 1 < pages else 0
            ifd = struct.pack("<H", len(entries))
            for tag, kind, count, value in entries:
                ifd += struct.pack("<HHI", tag, kind, count) + struct.pack(
                    "<I" if kind == 4 else "<HH", *((value,) if kind == 4 else (value, 0))
                )
            out.append(ifd + struct.pack("<I", next_ifd))
        return b"".join(out)

    return make


def png_with_dicm_at_128() -> bytes:
    """A valid PNG film whose bytes 128-131 read "DICM" (inside a private ancillary chunk)."""
    data = encode(Image.fromarray(film()), "PNG")
    ihdr_end = 8 + 25
    filler = 128 - (ihdr_end + 8)  # the chunk's data starts 8 bytes after its start
    content = b"x" * filler + b"DICM" + b"x" * 16
    chunk = struct.pack(">I4s", len(content), b"prIv") + content
    chunk += struct.pack(">I", zlib.crc32(b"prIv" + content))
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def dicom_float_pixels() -> bytes:
    """A film stored as Float Pixel Data (7FE0,0008), 32-bit floats, with one NaN."""
    ds = dicom_dataset(film(96, 96))
    del ds.PixelData
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = film(96, 96).astype(np.float32) / 255.0
    values[0, 0] = np.nan
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    return dicom_bytes(ds)


def dicom_double_pixels() -> bytes:
    """A film stored as Double Float Pixel Data (7FE0,0009)."""
    ds = dicom_dataset(film(96, 96))
    del ds.PixelData
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 64
    ds.DoubleFloatPixelData = (film(96, 96).astype(np.float64) * 3.5).tobytes()
    return dicom_bytes(ds)


def dicom_name_in_view_position() -> bytes:
    """ViewPosition "DOE JANE" (a valid code string shape, not a view), BodyPartExamined "JANE"."""
    ds = dicom_dataset()
    ds.ViewPosition = "DOE JANE"
    ds.BodyPartExamined = "JANE"
    return dicom_bytes(ds)


BIDI_NAME = "xray\u202egnp.exe"
"""Displays as 'xrayexe.png' where bidi controls are honoured."""


# --- clinical notes and finding lists ------------------------------------------------------------------

NOTES_100KB = ("Productive cough for three days, fever 38.4 C, no chest pain. " * 1700)[:102_400]
NOTES_CONTROL = "Fever\x00 and\x07 cough\x1b[31m;\x08 no pleural effusion\x7f.\r\nSpO2 91%\x0c on air.\x1b[0m"
NOTES_RTL = "المريض يعاني من سعال وحمى. No pneumothorax. \u202eevitagen\u202c pleural effusion; שיעול."
NOTES_EMOJI = (
    "🤒 fever 39.2°C, 😷 productive cough 🫁, no pleural effusion 👍🏽. "
    "👨\u200d👩\u200d👧 family history of TB."
)
NOTES_HTML = (
    '<script>alert("notes")</script> <img src=x onerror=alert(1)> Pleural effusion '
    "<b>present</b> <iframe src=javascript:alert(2)></iframe>"
)
NOTES_MARKDOWN = (
    "# Heading\n**bold** [click](javascript:alert(1)) ![x](http://example.invalid/x.png)\n"
    "| a | b |\n| --- | --- |\n> quote `code` pleural effusion ~~no~~ <http://example.invalid>"
)
LABELS_HTML = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
LABELS_MARKDOWN = ["**bold** [x](javascript:alert(1))", "# heading | cell |"]
LABELS_200 = [f"finding {i}" for i in range(200)]
LABELS_DUPLICATED = ["effusion", "Pleural effusion", "EFFUSION", "nodule", "Nodule", " nodule "]
LABELS_UNICODE = ["\u202eeffusion", "🫁 hiatus\u200bhernia", "opacité basale"]
LABELS_NON_LATIN = ["شفافية"]
INJECTIONS = ("<script", "<img", "onerror=", "<iframe", "javascript:", "](")
"""Raw strings that must never reach a report unescaped."""


def write_corpus(folder: Path, cases: dict[str, tuple[str, Callable[[], bytes]]]) -> dict[str, Path]:
    """Write ``{name: (file name, factory)}`` into ``folder``; return ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (filename, make) in cases.items():
        path = folder / filename
        path.write_bytes(make())
        paths[name] = path
    return paths
