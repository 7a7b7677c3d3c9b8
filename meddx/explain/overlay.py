"""A map on its film: `FilmMap` (the model-input square and where it sits on the film), the film with a map
blended over it (`overlay`), and PNG encodings. NumPy and OpenCV only: the page and the report use these
without loading the model; `meddx.explain.maps` makes the maps."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np

from meddx.model.geometry import Geometry

COLORMAPS = {
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,  # perceptual: brightness rises with the value (the CLI's figures)
    "magma": cv2.COLORMAP_MAGMA,
}


@dataclass(frozen=True)
class FilmMap:
    """One finding's map: positive evidence on the model-input square, and where that square sits on the film.

    Attributes:
        square: (g, g) float32 in [0, 1], covering the padded model input (1 at the strongest evidence,
            all zeros when nothing raised the score).
        geometry: how the film was padded and resized (from `Encoder.preprocess`).
    """

    square: np.ndarray
    geometry: Geometry

    def on_film(self, *, max_side: int | None = None) -> np.ndarray:
        """The map on the film, (H, W) float32 in [0, 1]; or shrunk so that no side exceeds ``max_side``.

        The square is upsampled bilinearly (half-pixel centres, like ``torch.nn.functional.interpolate(...,
        align_corners=False)``) to the padded square's side and the padding is cropped off: the exact
        inverse of `meddx.model.geometry.PadToSquare`. Asking for a small size never builds the full-size map.
        """
        g = self.geometry
        scale = 1.0 if max_side is None else min(1.0, max_side / max(g.width, g.height))
        width, height = max(1, round(g.width * scale)), max(1, round(g.height * scale))
        if not self.square.any():
            return np.zeros((height, width), np.float32)
        side = max(width, height, round(g.side * scale))
        top, left = min(round(g.pad_top * scale), side - height), min(round(g.pad_left * scale), side - width)
        square = cv2.resize(self.square, (side, side), interpolation=cv2.INTER_LINEAR)
        return np.clip(square[top : top + height, left : left + width], 0.0, 1.0).astype(np.float32)


OUTLINE_ALPHA = 0.35  # the lung outlines' weight: faint, so the map stays what the eye reads


def overlay(
    gray: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    colormap: str = "turbo",
    outline: np.ndarray | None = None,
) -> np.ndarray:
    """The film with the map blended over it, RGB uint8 at the film's full resolution.

    The colour's weight is ``alpha * heatmap`` per pixel: where the map is 0 the film shows unchanged, and
    the strongest evidence is blended at ``alpha``.

    Args:
        gray: the film, uint8 (H, W) (or (H, W, 3) RGB).
        heatmap: a map on the film (`FilmMap.on_film`), (H, W) in [0, 1].
        alpha: the blend weight at the map's maximum.
        colormap: a key of `COLORMAPS` (OpenCV colormaps; ``"inferno"`` and ``"magma"`` are perceptual).
        outline: (H, W) bool, the lung fields' outlines (`meddx.anatomy`), drawn faintly in white on top.
    """
    if heatmap.shape != gray.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the film's {gray.shape[:2]}")
    film = gray if gray.ndim == 3 else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    clipped = np.clip(heatmap, 0.0, 1.0)
    levels = np.round(clipped * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)
    weight = (alpha * clipped).astype(np.float32)
    blended = cv2.blendLinear(np.ascontiguousarray(film), colour, 1.0 - weight, weight)  # rounds, saturates
    if outline is not None and outline.shape == blended.shape[:2]:
        lines = blended[outline].astype(np.float32)
        blended[outline] = np.round(lines + OUTLINE_ALPHA * (255.0 - lines)).astype(np.uint8)
    return blended


def png_bytes(image: np.ndarray) -> bytes:
    """PNG-encode a uint8 image, (H, W) gray or (H, W, 3) RGB."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return encoded.tobytes()


def heatmap_png(
    gray: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45, colormap: str = "turbo"
) -> bytes:
    """The `overlay` of a map on its film, as PNG bytes."""
    return png_bytes(overlay(gray, heatmap, alpha=alpha, colormap=colormap))


def to_png_base64(image: np.ndarray) -> str:
    """A uint8 image as base64 PNG text (for ``<img src="data:image/png;base64,...">`` or JSON)."""
    return base64.b64encode(png_bytes(image)).decode("ascii")
