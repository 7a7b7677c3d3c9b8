"""Colour content: a chest radiograph is grayscale, so a colour image gets a warning (not a refusal).

A pixel is coloured when its largest and smallest channel differ by at least ``colour.chroma`` of full
scale; the image is colour when at least ``colour.fraction`` of its pixels are (``data/sanity.yaml``).
Grayscale films saved as RGB, with JPEG's chroma noise, stay far below both; a small coloured marker too.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from meddx.data import load

_SAMPLES = 250_000  # pixels looked at, on a regular grid: a 3000 x 3000 photo costs the same as a small one


@cache
def _rule() -> tuple[float, float]:
    spec = load("sanity.yaml")["colour"]
    return spec["chroma"].number(low=0.0, high=1.0), spec["fraction"].number(low=0.0, high=1.0)


def coloured_fraction(rgb: np.ndarray, full_scale: float = 255.0) -> float:
    """The fraction of pixels of an (H, W, 3) image whose channels differ by at least the chroma rule."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / _SAMPLES)))
    red, green, blue = (rgb[::step, ::step, i].astype(np.float32) for i in range(3))
    # max - min over the channels, as the largest pairwise difference (5x faster than max and min on axis -1)
    chroma = np.maximum(np.maximum(np.abs(red - green), np.abs(green - blue)), np.abs(red - blue))
    return float(np.mean(chroma >= _rule()[0] * full_scale))


def colour_warnings(rgb: np.ndarray, full_scale: float = 255.0) -> list[str]:
    """The warning for a colour image (see the module's rule), or none."""
    fraction = coloured_fraction(rgb, full_scale)
    if fraction < _rule()[1]:
        return []
    return [
        f"The image is in colour ({fraction:.0%} of it is clearly coloured), but a chest radiograph is "
        "grayscale: check that this is a chest X-ray. It was analysed in grayscale; scores for a "
        "photograph, a drawing or any other picture mean nothing."
    ]
