"""A monochrome DICOM frame to 8-bit display values: modality LUT, the file's VOI LUT or window, or an
automatic window, then MONOCHROME1 inversion. The rule, with its reasons, is in `meddx.io.dicom`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

from meddx.io.pixels import has_contrast, robust_window, scale_to_uint8, subsample

BROKEN_WINDOW = "The display window stored in the file could not be used; an automatic window was applied."
FLAT_WINDOW = (
    "The display window stored in the file shows this film as (nearly) one flat shade: it does not match "
    "the film's pixel values, so an automatic window was applied instead."
)
BROKEN_MODALITY_LUT = (
    "The modality LUT stored in the file is empty or incomplete; it was ignored and the stored pixel values "
    "were used (with the rescale slope and intercept, if any)."
)
_UNUSABLE = (ValueError, TypeError, LookupError, AttributeError, NotImplementedError, ZeroDivisionError)
"""What pydicom raises on display settings it cannot apply (untrusted file content)."""


def monochrome_to_uint8(frame: np.ndarray, ds: Dataset, *, invert: bool, warnings: list[str]) -> np.ndarray:
    """The frame as the file asks it to be displayed, or with an automatic window where that fails.

    Every step depends only on the stored value, so for up to 16-bit integers the steps run once per
    value between the frame's minimum and maximum, and the frame is then looked up in that table.
    """
    if frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2:
        low = int(frame.min())
        stored = np.arange(low, int(frame.max()) + 1)
        index = np.subtract(frame, low, dtype=np.int32)

        def lookup(table: np.ndarray) -> np.ndarray:
            return table[index]
    else:
        stored = frame

        def lookup(table: np.ndarray) -> np.ndarray:
            return table

    values = _modality_values(stored, ds, warnings)
    pixels = _file_display(values, ds, frame, lookup, warnings)
    if pixels is None:
        pixels = lookup(_automatic_display(values, ds, frame))
    return 255 - pixels if invert else pixels


def _modality_values(stored: np.ndarray, ds: Dataset, warnings: list[str]) -> np.ndarray:
    """`stored` through the modality LUT; an empty, incomplete or unusable Modality LUT Sequence is dropped
    (with a warning) and the rescale slope and intercept, if any, apply instead."""
    items = ds.get("ModalityLUTSequence")
    if items and not _complete_lut(items[0]):
        del ds.ModalityLUTSequence
        warnings.append(BROKEN_MODALITY_LUT)
        return apply_modality_lut(stored, ds)
    try:
        return apply_modality_lut(stored, ds)
    except _UNUSABLE:
        if "ModalityLUTSequence" not in ds:
            raise
        del ds.ModalityLUTSequence
        warnings.append(BROKEN_MODALITY_LUT)
        return apply_modality_lut(stored, ds)


def _complete_lut(item: Dataset) -> bool:
    descriptor, data = item.get("LUTDescriptor"), item.get("LUTData")
    try:
        return len(descriptor) == 3 and data is not None and len(data) > 0
    except TypeError:
        return False


def _file_display(
    values: np.ndarray,
    ds: Dataset,
    frame: np.ndarray,
    lookup: Callable[[np.ndarray], np.ndarray],
    warnings: list[str],
) -> np.ndarray | None:
    """The film through the file's VOI LUT or window; None (with a warning where one is due) when the file
    has none, when it cannot be applied, or when it leaves the film (nearly) one shade and an automatic
    window would not."""
    try:
        displayed = _apply_file_voi(values, ds, frame)
    except _UNUSABLE:
        warnings.append(BROKEN_WINDOW)
        return None
    if displayed is None:
        return None
    pixels = lookup(scale_to_uint8(*displayed))
    if has_contrast(pixels):
        return pixels
    automatic = lookup(_automatic_display(values, ds, frame))
    if not has_contrast(automatic):
        return pixels  # a flat film: the file's window is as good as any, and the contrast warning follows
    warnings.append(FLAT_WINDOW)
    return automatic


def _automatic_display(values: np.ndarray, ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """`values` scaled between the 0.5th and 99.5th percentiles of the frame's modality values."""
    window = robust_window(apply_modality_lut(subsample(frame), ds), fallback=nominal_range(ds, frame))
    return scale_to_uint8(values, *window)


def _apply_file_voi(
    values: np.ndarray, ds: Dataset, frame: np.ndarray
) -> tuple[np.ndarray, float, float] | None:
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
        return apply_windowing(values, ds), *nominal_range(ds, frame)
    return None


def nominal_range(ds: Dataset, frame: np.ndarray) -> tuple[float, float]:
    """The value range BitsStored allows after the modality LUT (the range pydicom's windowing targets);
    for Float and Double Float Pixel Data, which have no BitsStored, the frame's own range."""
    if frame.dtype.kind == "f":
        return float(frame.min()), float(frame.max())
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
