"""Where a film sits in the square model input: `PadToSquare` places it, `Geometry` records how, so that
maps and boxes go back onto the film. PIL only: the page and the report use it without loading the model."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Geometry:
    """How an original image was placed in the square model input (to map results back onto it)."""

    width: int
    height: int
    pad_left: int
    pad_top: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Model-input pixels per original pixel."""
        return self.size / self.side


class PadToSquare:
    """Pad an image to a square (centred, black), then resize: a centre crop would cut off lung edges."""

    def __init__(
        self, size: int, *, fill: int = 0, resample: Image.Resampling = Image.Resampling.BICUBIC
    ) -> None:
        self.size = size
        self.fill = fill
        self.resample = resample

    def __call__(self, image: Image.Image) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        side = max(width, height)
        left, top = (side - width) // 2, (side - height) // 2
        canvas = Image.new(image.mode, (side, side), self.fill)
        canvas.paste(image, (left, top))
        # reducing_gap: shrink by whole factors first (fast), then the filter over the last 3x; same look.
        resized = canvas.resize((self.size, self.size), self.resample, reducing_gap=3.0)
        return resized, Geometry(width, height, left, top, side, self.size)
