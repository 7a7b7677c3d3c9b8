"""Stage 1, reading the upload: bytes to a windowed grayscale `Study`.

The format is decided by content, never by file name (`sniff`). PNG, JPEG, BMP, TIFF, WebP and GIF go
through Pillow (`raster`); DICOM goes through pydicom (`dicom`: compressed transfer syntaxes through the
pylibjpeg plugins, the modality LUT, the VOI LUT or window, MONOCHROME1 inversion). Every result is an
8-bit grayscale array with non-identifying `ImageInfo`. Every failure is an `InputError` with a message
that is safe to show; nothing here logs.

Work per upload is bounded before and during decoding: declared sizes against `Limits.max_pixels`,
inflated bytes of a deflated DICOM, pages and frames walked, DICOM elements, sequence items and nesting
(`dicom_bounds`); and `bounded.load_study_bounded`, which the pipeline uses, runs the whole read in a worker
process with a wall-clock and a memory limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io.dicom import load_dicom
from meddx.io.pixels import contrast_warnings
from meddx.io.raster import load_raster
from meddx.io.sniff import ACCEPTED_FORMATS, SNIFF_BYTES, other_format_hint, sniff_format
from meddx.io.source import file_label, read_source
from meddx.io.study import ImageInfo, Study

__all__ = ["ACCEPTED_FORMATS", "ImageInfo", "Study", "load_study", "sniff_format"]


def load_study(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str | None = None,
    limits: Limits | None = None,
) -> Study:
    """Read an uploaded chest X-ray into a `Study`.

    Args:
        source: The file's bytes, a path to it, or a binary file object.
        filename: The name the person gave the file; used only to word messages, never to pick the format.
        limits: Size limits (file bytes, pixels, smallest side); `Limits()` if not given.

    Returns:
        The grayscale image with its non-identifying `ImageInfo` and any warnings.

    Raises:
        InputError: The file is empty, too large, not a supported format, damaged, or has an unusable
            image size. The message is safe to show and names the accepted formats where that helps.
    """
    limits = limits or Limits()
    if filename is None and isinstance(source, str | os.PathLike):
        filename = Path(source).name
    label = file_label(filename)
    data = read_source(source, label, limits)
    if not data:
        raise InputError(f"{label} is empty (0 bytes). {ACCEPTED_FORMATS}")
    source_format = sniff_format(data[:SNIFF_BYTES])
    if source_format is None:
        raise InputError(
            f"{label} is not an image meddx can read{other_format_hint(data)}. {ACCEPTED_FORMATS}"
        )
    has_preamble = data[128:132] == b"DICM"
    if source_format == "dicom":
        study = load_dicom(data, label, limits, has_preamble=has_preamble)
    else:
        try:
            study = load_raster(data, source_format, label, limits)
        except InputError:
            study = _dicom_behind_signature(data, label, limits) if has_preamble else None
            if study is None:
                raise  # the image's own refusal
    study.warnings.extend(contrast_warnings(study.pixels))
    return study


def _dicom_behind_signature(data: bytes, label: str, limits: Limits) -> Study | None:
    """A DICOM file whose 128-byte preamble (free content) starts with PNG's, JPEG's or GIF's signature:
    read as DICOM when the image does not read and "DICM" follows the preamble; None if that fails too."""
    try:
        return load_dicom(data, label, limits, has_preamble=True)
    except InputError:
        return None
