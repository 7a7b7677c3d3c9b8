"""One finding's map as a figure that reads on its own, and its caption (the figure's alt text).

The figure is the film with the map blended over it in a perceptual colour map (``inferno``: dark purple
to yellow, brightness rising with the value, readable in grayscale and by colour-blind readers; jet and
turbo are neither), the finding's name and its **image-only** score in a band above the film, a colour key
in that band, and each region's box, numbered, in cyan (a colour inferno never uses). Everything is drawn
with PIL's ImageDraw at the film's size; the film itself is never covered by text.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meddx.explain.overlay import COLORMAPS, overlay
from meddx.explain.regions import Region

COLORMAP = "inferno"
BOX_COLOUR = (0, 255, 255)  # cyan: not in inferno, so a box never blends into the map under it
TEXT_COLOUR = (255, 255, 255)
BAND_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class FigureText:
    """What the figure says: the finding, its image-only value (a score, or a probability when ``kind`` is
    "probability"), and how the map was made."""

    label: str
    image_probability: float
    method: str
    kind: str = "score"

    @property
    def value(self) -> str:
        """ "image-only score 0.73" (uncalibrated) or "image-only probability 73 %"."""
        if self.kind == "probability":
            return f"image-only probability {self.image_probability:.0%}".replace("%", " %")
        return f"image-only score {self.image_probability:.2f}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def colour_key(width: int, height: int, colormap: str = COLORMAP) -> np.ndarray:
    """A horizontal strip of the colour map, low (left) to high (right), RGB uint8 (height, width, 3)."""
    ramp = np.tile(np.linspace(0, 255, max(width, 1)).round().astype(np.uint8), (max(height, 1), 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def band_height(width: int) -> int:
    """The height of the title band above a film ``width`` pixels wide."""
    return 2 * _font_size(width) + 12


def _font_size(width: int) -> int:
    return int(np.clip(width / 32, 14, 48))


def figure(
    gray: np.ndarray,
    heatmap: np.ndarray,
    text: FigureText,
    regions: list[Region],
    *,
    colormap: str = COLORMAP,
    outline: np.ndarray | None = None,
) -> np.ndarray:
    """The annotated overlay, RGB uint8: a title band of `band_height` rows, then the film at full size.

    Args:
        gray: the film, uint8 (H, W).
        heatmap: the finding's map on the film, (H, W) in [0, 1] (`FilmMap.on_film`).
        text: the finding's name, image-only score and the method.
        regions: boxes in film pixels (`meddx.explain.regions.find_regions`), drawn numbered in list order.
        colormap: ``"inferno"`` or ``"magma"``.
        outline: (H, W) bool, the lung fields' outlines, drawn faintly (`meddx.explain.overlay.overlay`).
    """
    if heatmap.shape != gray.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the film's {gray.shape[:2]}")
    height, width = gray.shape[:2]
    size, band = _font_size(width), band_height(width)
    canvas = Image.new("RGB", (width, height + band), BAND_COLOUR)
    canvas.paste(Image.fromarray(overlay(gray, heatmap, colormap=colormap, outline=outline)), (0, band))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(size), _font(max(12, size * 3 // 4))
    draw.text((6, 4), text.label, fill=TEXT_COLOUR, font=font)
    score = text.value
    fits = [t for t in (f"{score}  |  {text.method}  |  not a diagnosis", f"{score}  |  not a diagnosis")
            if draw.textlength(t, font=small) <= width - 12]  # fmt: skip
    subtitle = fits[0] if fits else score
    draw.text((6, 8 + size), subtitle, fill=TEXT_COLOUR, font=small)
    # The key on the title's row, at the right: "low [dark ... bright] high".
    key_width, key_h = max(width // 6, 32), max(size // 2, 6)
    high_x = width - 6 - int(draw.textlength("high", font=small))
    key_x = high_x - 4 - key_width
    canvas.paste(Image.fromarray(colour_key(key_width, key_h, colormap)), (key_x, 4 + (size - key_h) // 2))
    draw.text((high_x, 4 + size // 2), "high", fill=TEXT_COLOUR, font=small, anchor="lm")
    draw.text((key_x - 4, 4 + size // 2), "low", fill=TEXT_COLOUR, font=small, anchor="rm")
    line = max(2, width // 250)
    for number, region in enumerate(regions, start=1):
        x0, y0, x1, y1 = region.box
        draw.rectangle((x0, y0 + band, x1 - 1, y1 - 1 + band), outline=BOX_COLOUR, width=line)
        tag = draw.textbbox((x0 + line, y0 + band + line), str(number), font=font)
        draw.rectangle((tag[0], tag[1], tag[2] + 3, tag[3] + 2), fill=BAND_COLOUR)  # readable on any map
        draw.text((x0 + line + 1, y0 + band + line), str(number), fill=BOX_COLOUR, font=font)
    return np.asarray(canvas)


def caption(text: FigureText, regions: list[Region], *, film_name: str | None = None) -> str:
    """The figure's alt text: what it shows, the score, the boxes in words, and how to read it."""
    where = f" on {film_name}" if film_name else ""
    boxes = (
        "; ".join(f"box {n}: {r.location} (peak {r.score:.2f})" for n, r in enumerate(regions, start=1))
        if regions
        else "no region stood out"
    )
    return (
        f"Attribution map ({text.method}) of {text.label}{where}, {text.value}. Brighter, yellower areas "
        f"raised the score most; {boxes}. A map "
        "shows where the model's score came from, not where disease is, and the score is not a diagnosis."
    )
