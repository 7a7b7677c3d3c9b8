"""Gray levels shared by the raster and DICOM readers: luminance, robust windows, scaling to 8 bits."""

from __future__ import annotations

import numpy as np

_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLES = 1_000_000
_MIN_CONTRAST = 8  # gray levels between the 0.5th and 99.5th percentile of the final image
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUMA


def subsample(image: np.ndarray) -> np.ndarray:
    """A strided view of a 2-D image with at most about `_PERCENTILE_SAMPLES` pixels."""
    step = max(1, int(np.sqrt(image.size / _PERCENTILE_SAMPLES)))
    return image[::step, ::step]


def robust_window(sample: np.ndarray, fallback: tuple[float, float]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of `sample`, or `fallback` for a flat image."""
    low, high = np.percentile(sample, _PERCENTILES)
    return (float(low), float(high)) if high > low else fallback


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map low..high linearly onto 0..255, clipping outside; a flat range maps everything to 0."""
    span = high - low
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255 / span if span else 0)
    return np.rint(np.clip(scaled, 0, 255, out=scaled)).astype(np.uint8)


def has_contrast(pixels: np.ndarray) -> bool:
    """Whether an 8-bit image spans at least `_MIN_CONTRAST` gray levels between its 0.5th and 99.5th
    percentiles (else it is, to the eye, one flat shade)."""
    low, high = robust_window(subsample(pixels), fallback=(0.0, 0.0))
    return high - low >= _MIN_CONTRAST


def contrast_warnings(pixels: np.ndarray) -> list[str]:
    if has_contrast(pixels):
        return []
    message = (
        "The image has almost no contrast (it is nearly one flat shade); check that this is the right "
        "file and that it was exported correctly."
    )
    return [message]
