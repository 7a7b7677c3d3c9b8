"""PNG, JPEG, BMP, TIFF, WebP and GIF through Pillow: EXIF orientation, 16-bit, palette, CMYK, alpha."""

from __future__ import annotations

import io

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

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io.colour import colour_warnings
from meddx.io.headers import corrupt_bmp_header, undecodable_jpeg
from meddx.io.pixels import luminance, robust_window, scale_to_uint8, subsample
from meddx.io.source import check_dimensions, damaged, decode_errors
from meddx.io.study import ImageInfo, Study

_FULL_RANGE_MARGIN = 0.02  # 16-bit data within 2 % of both ends "uses the full range"
_PIL_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "gif": GifImagePlugin.GifImageFile,
}
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


def load_raster(data: bytes, source_format: str, label: str, limits: Limits) -> Study:
    """Decode a Pillow-readable image, checking its declared size before decoding any pixel.

    A JPEG whose encoding Pillow does not decode (12-bit, lossless, JPEG-LS) is refused in those words,
    and a BMP whose header claims far more pixel data than the file holds as a corrupt header.
    Frames are counted on a second reader, so the first frame is read at its own size (a GIF frame that
    extends the canvas grows the size of the reader that walked to it).
    """
    opener = _PIL_OPENERS[source_format]
    failure = (undecodable_jpeg(data, label) if source_format == "jpeg" else None) or damaged(label)
    with decode_errors(failure):
        # The plugin class reads the header only; Image.open would also apply Pillow's own global
        # decompression-bomb limit, which cannot say the image size in its message.
        image = opener(io.BytesIO(data))
    if isinstance(image, BmpImagePlugin.BmpImageFile) and (
        corrupt := corrupt_bmp_header(image, len(data), label)
    ):
        raise InputError(corrupt)
    check_dimensions(*image.size, label, limits)
    with decode_errors(failure):
        opener(io.BytesIO(data)).verify()  # PNG: every chunk's CRC; the object is unusable afterwards
        frames = _count_frames(opener(io.BytesIO(data)), label, limits)
    if frames is None:
        _, unit = _RASTER_FRAME_LABELS.get(source_format, ("", "frames"))
        raise InputError(
            f"{label} holds more than {limits.max_frames:,} {unit}, so meddx did not read it; please upload "
            "the chest film on its own."
        )
    with decode_errors(failure):
        image.load()
        mode = image.mode
        image = ImageOps.exif_transpose(image)
        pixels, transparent, rgb = _pil_to_gray(image)
    warnings = colour_warnings(rgb) if rgb is not None else []
    if frames > 1:
        what, unit = _RASTER_FRAME_LABELS.get(source_format, ("Multi-frame image", "frames"))
        warnings.append(f"{what}: only the first of {frames} {unit} was analysed.")
    if transparent:
        warnings.append("The image has transparent areas; they were treated as black.")
    info = ImageInfo.of(
        source_format,
        pixels,
        bits_stored=_PIL_BITS.get(mode, 8),
        photometric_interpretation=_PIL_PHOTOMETRIC.get(mode, mode),
        frames=frames,
    )
    return Study(pixels=pixels, info=info, warnings=warnings)


def _count_frames(image: ImageFile.ImageFile, label: str, limits: Limits) -> int | None:
    """The number of pages or frames, walking at most ``limits.max_frames`` of them; None if there are more.

    ``image`` is a reader of its own: walking moves it (and a GIF frame reaching beyond the canvas grows
    its size). Pillow's ``n_frames`` walks every page of a TIFF (100,000 tiny pages: about a minute) and
    every frame of a GIF; WebP and APNG know their count from the header.

    Raises:
        InputError: a frame claims more pixels than ``limits.max_pixels`` (too large, in those words).
    """
    most = limits.max_frames
    if not getattr(image, "is_animated", False) and not isinstance(image, TiffImagePlugin.TiffImageFile):
        return 1
    if isinstance(image, WebPImagePlugin.WebPImageFile | PngImagePlugin.PngImageFile):
        count = image.n_frames  # from the header (WebP's, APNG's acTL chunk): nothing is walked
        return count if count <= most else None
    count = 1
    try:
        while count <= most:
            image.seek(count)
            if image.size[0] * image.size[1] > limits.max_pixels:
                raise InputError(_frame_too_large(image.size, count, label, limits))
            count += 1
    except EOFError:
        return count
    except Image.DecompressionBombError:  # Pillow's own check on a frame's extent (the size is set first)
        raise InputError(_frame_too_large(image.size, count, label, limits)) from None
    return None


def _frame_too_large(size: tuple[int, int], index: int, label: str, limits: Limits) -> str:
    width, height = size
    return (
        f"{label} has a frame (number {index + 1}) that claims {width}x{height} pixels "
        f"({width * height:,} pixels), too large: meddx reads at most {limits.max_pixels:,} pixels. "
        "Please upload the chest film on its own, as a single image."
    )


def _pil_to_gray(image: Image.Image) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """8-bit luminance of a decoded image, whether transparent areas were composited over black, and the
    RGB pixels of an image that was not grayscale (for `meddx.io.colour`), else None."""
    if image.mode.startswith("I;16"):
        return _high_depth_to_uint8(np.asarray(image), full_scale=65535), False, None
    if image.mode in ("I", "F"):
        return _high_depth_to_uint8(np.asarray(image), full_scale=None), False, None
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3]
        gray = luminance(rgba[..., :3]) * (alpha / 255)
        rgb = None if image.mode in ("LA", "La") else rgba[..., :3]
        return np.rint(gray).astype(np.uint8), bool(alpha.min() < 255), rgb
    if image.mode in ("1", "L"):
        return np.array(image.convert("L")), False, None
    image = image.convert("RGB")
    return np.array(image.convert("L")), False, np.asarray(image)


def _high_depth_to_uint8(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Linear full-range scaling if the data spans (nearly) 0..full_scale, else a robust window."""
    low, high = float(values.min()), float(values.max())
    margin = _FULL_RANGE_MARGIN * (full_scale or 0)
    if full_scale and low <= margin and high >= full_scale - margin:
        return scale_to_uint8(values, 0.0, full_scale)
    return scale_to_uint8(values, *robust_window(subsample(values), fallback=(low, high)))
