"""Uploads to `Study`: read an image or DICOM file and return what a radiologist would see.

The format is decided by content, never by file name. PNG, JPEG, BMP, TIFF, WebP and GIF go through
Pillow; DICOM goes through pydicom (compressed transfer syntaxes through the pylibjpeg plugins), with the
modality LUT (rescale), the VOI LUT or window, and MONOCHROME1 inversion applied. Every result is an 8-bit
grayscale array.

Besides the file meta group, only the whitelisted, non-identifying DICOM tags (`_DICOM_TAGS`) are parsed
from the file, so patient names, IDs, dates and the like never reach a `Study`. Every failure is an
`InputError` with a message that is safe to show; this module logs nothing.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from meddx.errors import InputError

__all__ = ["ACCEPTED_FORMATS", "ImagingLimits", "Study", "load_study", "sniff_format"]

# pydicom's value validation warns about *and logs* the offending value, and in a damaged file a wrong
# length can make that value run on into neighbouring tags such as PatientName. meddx reads only a few
# tags and has no use for those messages, so validation on reading is off for this process.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
# pydicom logs every failed decoder attempt as an ERROR with its traceback (`LOGGER.exception`), and once
# anything has configured the root logger (open_clip's module-level `logging.info` calls `basicConfig`)
# that lands on the CLI's stderr and in the app's log. Each failure here becomes an `InputError`, so
# pydicom's records stay with its own handlers (a NullHandler unless `pydicom.config.debug()` is on).
logging.getLogger("pydicom").propagate = False

ACCEPTED_FORMATS = "meddx accepts PNG, JPEG, BMP, TIFF, WebP and DICOM chest X-rays."

_SNIFF_BYTES = 1024
_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLES = 1_000_000
_MIN_CONTRAST = 8  # gray levels between the 0.5th and 99.5th percentile of the final image
_FULL_RANGE_MARGIN = 0.02  # 16-bit data within 2 % of both ends "uses the full range"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"

_PIL_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "gif": GifImagePlugin.GifImageFile,
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_OTHER_FORMATS = (  # content people upload by mistake: name it in the message
    (re.compile(rb"\A%PDF-"), "a PDF document"),
    (re.compile(rb"\APK\x03\x04"), "a ZIP archive"),
    (re.compile(rb"\A\s*<(?:[^\x00]*?<)?svg\b", re.IGNORECASE), "an SVG drawing"),
    (re.compile(rb"\A....ftyp(heic|heix|mif1|msf1|avif)", re.DOTALL), "an HEIC/AVIF photo"),
)

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
]
_EXPLICIT_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD",
    b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
    b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
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
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_PIL_BITS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_PIL_PHOTOMETRIC = {
    "1": "MONOCHROME2",
    "L": "MONOCHROME2",
    "LA": "MONOCHROME2",
    "I;16": "MONOCHROME2",
    "I;16L": "MONOCHROME2",
    "I;16B": "MONOCHROME2",
    "I;16N": "MONOCHROME2",
    "I": "MONOCHROME2",
    "F": "MONOCHROME2",
    "RGB": "RGB",
    "RGBA": "RGB",
    "P": "PALETTE COLOR",
    "PA": "PALETTE COLOR",
    "CMYK": "CMYK",
    "YCbCr": "YBR_FULL",
}
_RASTER_FRAME_LABELS = {
    "gif": ("Animated GIF", "frames"),
    "webp": ("Animated WebP", "frames"),
    "tiff": ("Multi-page TIFF", "pages"),
}


@dataclass(frozen=True)
class ImagingLimits:
    """What `load_study` accepts.

    Attributes:
        max_file_bytes: Largest file accepted, in bytes.
        max_pixels: Largest image (width x height of the frame that is decoded), checked from the header
            before any pixel is decoded: a decompression-bomb guard.
        min_side: Smallest width or height accepted, in pixels.
    """

    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 60_000_000
    min_side: int = 32


@dataclass
class Study:
    """One loaded image, ready for the model and for display.

    Attributes:
        pixels: 2-D uint8 grayscale array (height, width) after windowing, LUTs, inversion and EXIF
            orientation: what a radiologist would see.
        metadata: Non-identifying facts only: source_format, width, height, bits_stored, modality,
            view_position, photometric_interpretation, pixel_spacing, body_part, frames, transfer_syntax.
        warnings: Human-readable, non-identifying notes about how the file was read.
    """

    pixels: np.ndarray
    metadata: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """The image size as (width, height)."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def to_pil(self, mode: str = "RGB") -> Image.Image:
        """Return the pixels as a Pillow image in `mode` ("RGB" for the model, "L" for grayscale)."""
        image = Image.fromarray(self.pixels)
        return image if mode == "L" else image.convert(mode)


def load_study(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str | None = None,
    limits: ImagingLimits | None = None,
) -> Study:
    """Read an uploaded chest X-ray into a `Study`.

    Args:
        source: The file's bytes, a path to it, or a binary file object.
        filename: The name the person gave the file; used only to word messages, never to pick the format.
        limits: Size limits; the defaults of `ImagingLimits` if not given.

    Returns:
        The grayscale image with its non-identifying metadata and any warnings.

    Raises:
        InputError: The file is empty, too large, not a supported format, damaged, or has an unusable
            image size. The message is safe to show and names the accepted formats where that helps.
    """
    limits = limits or ImagingLimits()
    if filename is None and isinstance(source, str | os.PathLike):
        filename = Path(source).name
    label = _file_label(filename)
    data = _read_source(source, label, limits)
    if not data:
        raise InputError(f"{label} is empty (0 bytes). {ACCEPTED_FORMATS}")
    source_format = sniff_format(data[:_SNIFF_BYTES])
    if source_format is None:
        raise InputError(
            f"{label} is not an image meddx can read{_other_format_hint(data)}. {ACCEPTED_FORMATS}"
        )
    if source_format == "dicom":
        study = _load_dicom(data, label, limits, has_preamble=data[128:132] == b"DICM")
    else:
        study = _load_raster(data, source_format, label, limits)
    study.warnings.extend(_contrast_warnings(study.pixels))
    return study


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (at least 132 are needed for DICOM).

    Args:
        head: The start of the file.

    Returns:
        "dicom", "png", "jpeg", "bmp", "tiff", "webp" or "gif"; None for anything else (SVG, PDF, text).
    """
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES:
        return "bmp"
    if _looks_like_bare_dicom(head):
        return "dicom"
    return None


# --- reading the upload ------------------------------------------------------------------------------


def _file_label(filename: str | None) -> str:
    """'The file' or "The file 'name.png'" with a cleaned, shortened base name."""
    if not filename:
        return "The file"
    name = re.sub(r"[\x00-\x1f\x7f]", "", Path(filename).name)[:80]
    return f"The file '{name}'" if name else "The file"


def _read_source(source: bytes | str | os.PathLike | BinaryIO, label: str, limits: ImagingLimits) -> bytes:
    """The file's bytes, refusing more than `limits.max_file_bytes`."""
    too_large = InputError(
        f"{label} is larger than {_format_bytes(limits.max_file_bytes)}, the most meddx accepts. "
        "Please upload a smaller export of the image."
    )
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
        elif isinstance(source, str | os.PathLike):
            if os.stat(source).st_size > limits.max_file_bytes:
                raise too_large
            data = Path(source).read_bytes()
        else:
            data = source.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise InputError(f"{label} could not be opened. Please upload it again.") from exc
    if len(data) > limits.max_file_bytes:
        raise too_large
    return data


def _format_bytes(count: int) -> str:
    for unit, size in (("MB", 2**20), ("KB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def _other_format_hint(data: bytes) -> str:
    """' (it looks like a PDF document)' for common wrong uploads, else ''."""
    head = data[:_SNIFF_BYTES]
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


@contextmanager
def _decode_errors(message: str) -> Iterator[None]:
    """Turn any failure inside the block into an `InputError` with `message` (MemoryError: its own)."""
    try:
        yield
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(
            "The image is too large to process with the memory available. Please upload a smaller export."
        ) from exc
    except Exception as exc:
        raise InputError(message) from exc
    except BaseException as exc:
        # Rust decoders (pylibjpeg-rle) turn a panic on malformed data into pyo3's PanicException,
        # which derives from BaseException; anything else (KeyboardInterrupt, SystemExit) propagates.
        if type(exc).__name__ != "PanicException":
            raise
        raise InputError(message) from exc


def _damaged(label: str) -> str:
    return (
        f"{label} is damaged or incomplete, so its image could not be read. "
        "Please export and upload it again."
    )


def _check_dimensions(width: int, height: int, label: str, limits: ImagingLimits) -> None:
    """Refuse images with too many pixels or a side shorter than `limits.min_side`, from the header."""
    if width * height > limits.max_pixels:
        raise InputError(
            f"{label} is {width}x{height} pixels ({width * height:,} pixels); meddx accepts at most "
            f"{limits.max_pixels:,} pixels. Please upload a downscaled export."
        )
    if min(width, height) < limits.min_side:
        raise InputError(
            f"{label} is only {width}x{height} pixels; meddx needs at least {limits.min_side} pixels "
            "on each side."
        )


# --- PNG, JPEG, BMP, TIFF, WebP, GIF ----------------------------------------------------------------


def _load_raster(data: bytes, source_format: str, label: str, limits: ImagingLimits) -> Study:
    """Decode a Pillow-readable image, checking its declared size before decoding any pixel."""
    opener = _PIL_OPENERS[source_format]
    with _decode_errors(_damaged(label)):
        # The plugin class reads the header only; Image.open would also apply Pillow's own global
        # decompression-bomb limit, which cannot say the image size in its message.
        image = opener(io.BytesIO(data))
    _check_dimensions(*image.size, label, limits)
    with _decode_errors(_damaged(label)):
        opener(io.BytesIO(data)).verify()  # PNG: every chunk's CRC; the object is unusable afterwards
        frames = getattr(image, "n_frames", 1)
        image.load()
        mode = image.mode
        image = ImageOps.exif_transpose(image)
        pixels, transparent = _pil_to_gray(image)
    warnings = []
    if frames > 1:
        what, unit = _RASTER_FRAME_LABELS.get(source_format, ("Multi-frame image", "frames"))
        warnings.append(f"{what}: only the first of {frames} {unit} was analysed.")
    if transparent:
        warnings.append("The image has transparent areas; they were treated as black.")
    metadata = _metadata(
        source_format,
        pixels,
        bits_stored=_PIL_BITS.get(mode, 8),
        photometric_interpretation=_PIL_PHOTOMETRIC.get(mode, mode),
        frames=frames,
    )
    return Study(pixels=pixels, metadata=metadata, warnings=warnings)


def _pil_to_gray(image: Image.Image) -> tuple[np.ndarray, bool]:
    """8-bit luminance of a decoded image, and whether transparent areas were composited over black."""
    if image.mode.startswith("I;16"):
        return _high_depth_to_uint8(np.asarray(image), full_scale=65535), False
    if image.mode in ("I", "F"):
        return _high_depth_to_uint8(np.asarray(image), full_scale=None), False
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3]
        gray = _luminance(rgba[..., :3]) * (alpha / 255)
        return np.rint(gray).astype(np.uint8), bool(alpha.min() < 255)
    if image.mode not in ("1", "L"):
        image = image.convert("RGB")
    return np.array(image.convert("L")), False


def _high_depth_to_uint8(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Linear full-range scaling if the data spans (nearly) 0..full_scale, else a robust window."""
    low, high = float(values.min()), float(values.max())
    margin = _FULL_RANGE_MARGIN * (full_scale or 0)
    if full_scale and low <= margin and high >= full_scale - margin:
        return _scale_to_uint8(values, 0.0, full_scale)
    return _scale_to_uint8(values, *_robust_window(_subsample(values), fallback=(low, high)))


# --- DICOM -------------------------------------------------------------------------------------------


def _load_dicom(data: bytes, label: str, limits: ImagingLimits, *, has_preamble: bool) -> Study:
    """Decode the first frame of a DICOM file, reading only the whitelisted tags."""
    with _decode_errors(_damaged(label)):
        # force=True only for files whose data set `sniff_format` already parsed without a preamble.
        ds = dcmread(io.BytesIO(data), force=not has_preamble, specific_tags=_DICOM_TAGS)
        if "PixelData" not in ds:
            raise InputError(
                "This DICOM file has no image (pixel data); it may be a report, a structured document or "
                "a presentation state. Please upload the image itself."
            )
        transfer_syntax = _transfer_syntax(ds)
        decode_failed = _decode_failure(label, transfer_syntax)
        width, height, frames = int(ds.Columns), int(ds.Rows), _frame_count(ds)
        bits_stored, samples = int(ds.BitsStored), int(ds.get("SamplesPerPixel", 1))
        photometric = _code_string(ds, "PhotometricInterpretation")
        description = {
            "modality": _code_string(ds, "Modality"),
            "view_position": _code_string(ds, "ViewPosition"),
            "body_part": _code_string(ds, "BodyPartExamined"),
            "pixel_spacing": _pixel_spacing(ds),
        }
    _check_dimensions(width, height, label, limits)
    if samples != 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        stored_as = (
            photometric if photometric in _OTHER_PHOTOMETRICS else "an unknown photometric interpretation"
        )
        raise InputError(
            f"{label} stores its image as {stored_as}, which meddx does not support. Please export it as "
            "MONOCHROME2 or RGB, or as PNG."
        )
    with _decode_errors(decode_failed):
        frame = pixel_array(ds, index=0)
    warnings: list[str] = []
    with _decode_errors(_damaged(label)):
        if samples == 3:
            pixels = _rgb_to_uint8(frame, bits_stored)
        else:
            pixels = _monochrome_to_uint8(frame, ds, invert=photometric == "MONOCHROME1", warnings=warnings)
    if frames > 1:
        warnings.append(f"Multi-frame DICOM: only the first of {frames} frames was analysed.")
    warnings.extend(_modality_warnings(description["modality"]))
    metadata = _metadata(
        "dicom",
        pixels,
        bits_stored=bits_stored,
        photometric_interpretation=photometric,
        frames=frames,
        transfer_syntax=transfer_syntax.name,
        **description,
    )
    return Study(pixels=pixels, metadata=metadata, warnings=warnings)


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
    """The message for pixel data that cannot be decoded: name the compression, if any."""
    if not transfer_syntax.is_encapsulated:  # raises ValueError for a UID that is no transfer syntax
        return _damaged(label)
    return (
        f"{label} is compressed with {transfer_syntax.name}, which could not be decoded. Please export it "
        "uncompressed or as PNG."
    )


def _frame_count(ds: Dataset) -> int:
    return max(1, int(ds.get("NumberOfFrames") or 1))


def _monochrome_to_uint8(frame: np.ndarray, ds: Dataset, *, invert: bool, warnings: list[str]) -> np.ndarray:
    """Modality LUT, then the file's VOI LUT or window (else a robust window), then MONOCHROME1 inversion.

    Every step depends only on the stored value, so for up to 16-bit integers the steps run once per
    value between the frame's minimum and maximum, and the frame is then looked up in that table.
    """
    if frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2:
        low = int(frame.min())
        table = _display_values(np.arange(low, int(frame.max()) + 1), frame, ds, invert, warnings)
        return table[np.subtract(frame, low, dtype=np.int32)]
    return _display_values(frame, frame, ds, invert, warnings)


def _display_values(
    stored: np.ndarray, frame: np.ndarray, ds: Dataset, invert: bool, warnings: list[str]
) -> np.ndarray:
    """The 8-bit display value of each of `stored`; `frame` supplies the statistics of a robust window."""
    values = apply_modality_lut(stored, ds)
    try:
        displayed = _apply_file_voi(values, ds)
    except (ValueError, TypeError, LookupError, AttributeError, NotImplementedError):
        # The display settings are untrusted file content: fall back rather than fail.
        displayed = None
        warnings.append(
            "The display window stored in the file could not be used; an automatic window was applied."
        )
    if displayed is None:
        window = _robust_window(apply_modality_lut(_subsample(frame), ds), fallback=_nominal_range(ds))
        pixels = _scale_to_uint8(values, *window)
    else:
        pixels = _scale_to_uint8(*displayed)
    if invert:
        pixels = 255 - pixels
    return pixels


def _apply_file_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """The file's VOI LUT (preferred) or window applied to `values`, with the range of its output.

    Returns None when the file has neither. This is pydicom's `apply_voi_lut` split in its two halves so
    that the output range is known: the LUT's own range, or the range pydicom's windowing maps onto.
    """
    lut_items = ds.get("VOILUTSequence")
    if lut_items and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]:
        entries, first_mapped, _ = (int(v) for v in lut_items[0].LUTDescriptor)
        table = apply_voi(np.arange(first_mapped, first_mapped + (entries or 65536)), ds)
        indices = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        return apply_voi(indices, ds), float(table.min()), float(table.max())
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return apply_windowing(values, ds), *_nominal_range(ds)
    return None


def _nominal_range(ds: Dataset) -> tuple[float, float]:
    """The value range BitsStored allows after the modality LUT (the range pydicom's windowing targets)."""
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        return 0.0, 2.0 ** int(modality_lut[0].LUTDescriptor[2]) - 1
    bits = int(ds.BitsStored)
    if ds.get("PixelRepresentation", 0) == 0:
        low, high = 0.0, 2.0**bits - 1
    else:
        low, high = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _rgb_to_uint8(frame: np.ndarray, bits_stored: int) -> np.ndarray:
    """Luminance of an RGB frame (pydicom has already converted YBR to RGB), scaled from BitsStored."""
    return _scale_to_uint8(_luminance(frame.astype(np.float32)), 0.0, 2.0**bits_stored - 1)


def _code_string(ds: Dataset, keyword: str) -> str | None:
    """An upper-cased code string value, or None if absent or not shaped like a DICOM code string."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().upper()
    return text if _CODE_STRING.fullmatch(text) else None


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


# --- shared ------------------------------------------------------------------------------------------


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUMA


def _subsample(image: np.ndarray) -> np.ndarray:
    """A strided view of a 2-D image with at most about `_PERCENTILE_SAMPLES` pixels."""
    step = max(1, int(np.sqrt(image.size / _PERCENTILE_SAMPLES)))
    return image[::step, ::step]


def _robust_window(sample: np.ndarray, fallback: tuple[float, float]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of `sample`, or `fallback` for a flat image."""
    low, high = np.percentile(sample, _PERCENTILES)
    return (float(low), float(high)) if high > low else fallback


def _scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map low..high linearly onto 0..255, clipping outside; a flat range maps everything to 0."""
    span = high - low
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255 / span if span else 0)
    return np.rint(np.clip(scaled, 0, 255, out=scaled)).astype(np.uint8)


def _contrast_warnings(pixels: np.ndarray) -> list[str]:
    low, high = _robust_window(_subsample(pixels), fallback=(0.0, 0.0))
    if high - low >= _MIN_CONTRAST:
        return []
    message = (
        "The image has almost no contrast (it is nearly one flat shade); check that this is the right "
        "file and that it was exported correctly."
    )
    return [message]


def _metadata(
    source_format: str,
    pixels: np.ndarray,
    *,
    bits_stored: int,
    photometric_interpretation: str | None,
    frames: int,
    modality: str | None = None,
    view_position: str | None = None,
    body_part: str | None = None,
    pixel_spacing: list[float] | None = None,
    transfer_syntax: str | None = None,
) -> dict:
    """The complete, non-identifying metadata dict; every key is always present."""
    return {
        "source_format": source_format,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "bits_stored": bits_stored,
        "modality": modality,
        "view_position": view_position,
        "photometric_interpretation": photometric_interpretation,
        "pixel_spacing": pixel_spacing,
        "body_part": body_part,
        "frames": frames,
        "transfer_syntax": transfer_syntax,
    }
