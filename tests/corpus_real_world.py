"""Files like the real-world ones meddx misread (issue 27), built here: nothing is copied from a test suite.

- DICOM films whose stored window misses the pixel values, or is right; an empty Modality LUT Sequence item;
  a transfer syntax pydicom does not know; a header that claims 100,000 frames for one; a data set without
  file meta (big endian, or starting at the patient group); a preamble that starts with PNG's signature.
- A BigTIFF, a GIF whose second frame reaches beyond the canvas (and one whose frame claims 65535x65535),
  a BMP whose header claims billions of pixels, and lossless JPEG files written by `lossless_jpeg`, a
  minimal encoder of the lossless process (SOF3, predictor 1), whose output pylibjpeg decodes exactly.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from tests.helpers import chest_dataset

DEFLATED_FRAMES = "1.2.840.10008.1.2.8.1"
"""Deflated Image Frame Compression, a transfer syntax newer than pydicom 3.0."""
HIGH_FILM_RANGE = (32_744, 65_535)
"""The pixel values of the film whose stored window (centre 2725, width 5310) lies far below them."""


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def chest_like(height: int = 256, width: int = 224, *, low: int = 0, high: int = 255) -> np.ndarray:
    """Two lung fields darker than the mediastinum, a gradient down the film: values from low to high."""
    rows = np.linspace(0.3, 1.0, height)[:, None] * np.ones((1, width))
    lungs = np.zeros((height, width), bool)
    lungs[height // 6 : 5 * height // 6, width // 8 : 3 * width // 8] = True
    lungs[height // 6 : 5 * height // 6, 5 * width // 8 : 7 * width // 8] = True
    shade = np.where(lungs, rows * 0.35, rows)
    shade = (shade - shade.min()) / (shade.max() - shade.min())
    return np.rint(low + shade * (high - low)).astype(np.uint16 if high > 255 else np.uint8)


def dicom_bytes(
    ds: Dataset, *, file_format: bool = True, implicit: bool = False, little: bool = True
) -> bytes:
    buffer = io.BytesIO()
    if file_format:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=implicit, little_endian=little)
    return buffer.getvalue()


def high_film(center: float, width: float) -> Dataset:
    """A 16-bit DX film with values 32,744-65,535 and the given stored window."""
    low, high = HIGH_FILM_RANGE
    ds = chest_dataset(chest_like(low=low, high=high), bits_stored=16)
    ds.WindowCenter, ds.WindowWidth = center, width
    return ds


def dicom_window_below_pixels() -> bytes:
    return dicom_bytes(high_film(2725, 5310))


def dicom_window_right() -> bytes:
    return dicom_bytes(high_film(49_000, 30_000))


def dicom_flat_voi_lut() -> bytes:
    """A VOI LUT that maps every value of the film to one output value."""
    ds = high_film(49_000, 30_000)
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 16])  # 256 entries from 0: the film's values lie above
    item.add_new("LUTData", "US", list(range(0, 65536, 256)))
    ds.VOILUTSequence = [item]
    return dicom_bytes(ds)


def dicom_empty_modality_lut_item(pixels: np.ndarray | None = None) -> bytes:
    ds = chest_dataset(chest_like(low=200, high=3800) if pixels is None else pixels, bits_stored=12)
    ds.ModalityLUTSequence = [Dataset()]
    return dicom_bytes(ds)


def dicom_unknown_syntax() -> bytes:
    """Deflated Image Frame Compression (1.2.840.10008.1.2.8.1), newer than pydicom 3.0's dictionary."""
    import zlib

    ds = chest_dataset(chest_like(64, 64))
    frame = zlib.compress(ds.PixelData)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # pydicom cannot write a syntax it does not know:
    data = dicom_bytes(ds)  # the UID is replaced in the written file meta (same length, null-padded)
    assert data.count(JPEG2000Lossless.encode()) == 1
    return data.replace(JPEG2000Lossless.encode(), DEFLATED_FRAMES.encode() + b"\0")


def dicom_claims_100k_frames() -> bytes:
    ds = chest_dataset(chest_like(64, 64))
    ds.NumberOfFrames = 100_000
    return dicom_bytes(ds)


def dicom_j2k_claims_100k_frames() -> bytes:
    ds = chest_dataset(chest_like(64, 64))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.NumberOfFrames = 100_000
    return dicom_bytes(ds)


def dicom_big_endian_no_meta() -> bytes:
    """Explicit VR big endian, no preamble and no file meta: the data set alone."""
    ds = chest_dataset(chest_like(64, 64))
    del ds.file_meta
    return dicom_bytes(ds, file_format=False, little=False)


def dicom_from_patient_group() -> bytes:
    """Implicit VR, no file meta, its group 0008 stripped: the data set starts at (0010,0010)."""
    ds = chest_dataset(chest_like(64, 64))
    del ds.file_meta
    for tag in [element.tag for element in ds if element.tag.group == 0x0008]:
        del ds[tag]
    return dicom_bytes(ds, file_format=False, implicit=True)


def dicom_without_rows() -> bytes:
    ds = chest_dataset(chest_like(64, 64))
    del ds.Rows, ds.PixelRepresentation
    return dicom_bytes(ds)


def dicom_png_preamble() -> bytes:
    """A valid DICOM file whose 128-byte preamble starts with PNG's 8-byte signature."""
    ds = chest_dataset(chest_like(64, 64))
    ds.preamble = b"\x89PNG\r\n\x1a\n" + bytes(120)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def bigtiff(pixels: np.ndarray | None = None) -> bytes:
    """An uncompressed 8-bit grayscale BigTIFF ("II+", 64-bit offsets), one strip."""
    pixels = chest_like(96, 80) if pixels is None else pixels
    height, width = pixels.shape
    entries = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 16, None)]
    entries += [(277, 3, 1), (278, 3, height), (279, 16, height * width)]
    ifd_offset = 16
    strip_offset = ifd_offset + 8 + 20 * len(entries) + 8
    out = b"II+\x00" + struct.pack("<HHQ", 8, 0, ifd_offset) + struct.pack("<Q", len(entries))
    for tag, kind, value in entries:
        value = strip_offset if value is None else value
        out += struct.pack("<HHQH6x" if kind == 3 else "<HHQQ", tag, kind, 1, value)
    return out + struct.pack("<Q", 0) + pixels.tobytes()


def _gif_descriptors(data: bytes) -> list[int]:
    """Offsets of the image descriptors (``,``) of a GIF, found by walking its blocks."""
    flags, pos, found = data[10], 13, []
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    while pos < len(data) and data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:
            found.append(pos)
            local = data[pos + 9]
            pos += 10 + ((3 << ((local & 7) + 1)) if local & 0x80 else 0) + 1  # LZW minimum code size
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return found


def gif_second_frame_beyond_canvas(*, offset: tuple[int, int] = (40, 30)) -> bytes:
    """Two 64x48 frames; the second placed at ``offset``, beyond the 64x48 canvas."""
    first = Image.fromarray(chest_like(48, 64))
    data = bytearray(encode(first, "GIF", save_all=True, append_images=[Image.new("L", (64, 48), 200)]))
    second = _gif_descriptors(bytes(data))[1]
    data[second + 1 : second + 5] = struct.pack("<HH", *offset)
    return bytes(data)


def gif_frame_claims_65535_square() -> bytes:
    """The second frame's descriptor claims 65535x65535 pixels (4.3 billion)."""
    data = bytearray(gif_second_frame_beyond_canvas(offset=(0, 0)))
    second = _gif_descriptors(bytes(data))[1]
    data[second + 5 : second + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def bmp_claims_billions() -> bytes:
    """An 8-bit BMP whose header claims 100000x50000 pixels (5 billion); the file holds 64x64."""
    data = bytearray(encode(Image.fromarray(chest_like(64, 64)), "BMP"))
    data[18:26] = struct.pack("<ii", 100_000, 50_000)
    return bytes(data)


def lossless_jpeg(pixels: np.ndarray, precision: int) -> bytes:
    """``pixels`` (one component) as a lossless JPEG (SOF3, predictor 1, one Huffman table)."""
    height, width = pixels.shape
    categories = list(range(17))  # SSSS 0..16, every code 5 bits long (canonical: 00000, 00001, ...)
    bits = [0, 0, 0, 0, len(categories)] + [0] * 11
    huffman = struct.pack(">HB", 3 + 16 + len(categories), 0x00) + bytes(bits) + bytes(categories)
    frame = struct.pack(">HBHHB", 11, precision, height, width, 1) + bytes([1, 0x11, 0])
    scan = struct.pack(">HB", 8, 1) + bytes([1, 0x00, 1, 0, 0])  # predictor 1, no point transform
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + frame + b"\xff\xc4" + huffman + b"\xff\xda" + scan
    values = pixels.astype(np.int64)
    stream, pending = bytearray(), [0, 0]  # bit buffer, bit count

    def put(value: int, count: int) -> None:
        pending[0] = (pending[0] << count) | (value & ((1 << count) - 1))
        pending[1] += count
        while pending[1] >= 8:
            pending[1] -= 8
            byte = (pending[0] >> pending[1]) & 0xFF
            stream.append(byte)
            if byte == 0xFF:
                stream.append(0)

    for row in range(height):
        for column in range(width):
            if row == 0 and column == 0:
                prediction = 1 << (precision - 1)
            elif column == 0:
                prediction = values[row - 1, 0]
            else:
                prediction = values[row, column - 1]
            difference = int(values[row, column] - prediction)
            difference = ((difference + 32768) % 65536) - 32768
            size = abs(difference).bit_length()
            put(size, 5)
            if 0 < size < 16:
                put(difference if difference > 0 else difference - 1, size)
    if pending[1]:
        put((1 << (8 - pending[1])) - 1, 8 - pending[1])  # pad with ones
    return bytes(out + stream + b"\xff\xd9")


def jpeg_lossless_12bit() -> bytes:
    return lossless_jpeg(chest_like(64, 64, low=100, high=4000), 12)


def jpeg_lossless_8bit() -> bytes:
    return lossless_jpeg(chest_like(64, 64), 8)
