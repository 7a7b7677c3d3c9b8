"""One map figure for every surface: the page, the HTML report and the CLI show the same picture
(`meddx.explain.figure`: inferno with its key, numbered boxes, the finding and the image-only value it
explains) with the same caption, which is also its alt text."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from meddx.explain.figure import FigureText, caption, figure
from meddx.explain.methods import METHOD_NAMES
from meddx.result import Analysis, FindingResult


def figure_text(analysis: Analysis, finding: FindingResult) -> FigureText:
    """What the figure of ``finding`` says: its name, image-only value and kind, and the method."""
    method = METHOD_NAMES.get(analysis.explanation.method, analysis.explanation.method)
    return FigureText(finding.label, finding.image_probability, method, finding.kind)


def _scaled_regions(finding: FindingResult, scale: float) -> list:
    if scale == 1.0:
        return list(finding.regions)
    return [replace(r, box=[round(v * scale) for v in r.box]) for r in finding.regions]


def map_figure(analysis: Analysis, finding: FindingResult, *, max_side: int | None = None) -> np.ndarray:
    """The finding's figure (RGB uint8), the film at most ``max_side`` pixels on its longer side."""
    heatmap = analysis.maps[finding.id].on_film(max_side=max_side)
    film = np.asarray(analysis.preview, dtype=np.uint8)
    scale = heatmap.shape[0] / film.shape[0]
    if heatmap.shape != film.shape[:2]:
        film = cv2.resize(film, heatmap.shape[::-1], interpolation=cv2.INTER_AREA)
    return figure(film, heatmap, figure_text(analysis, finding), _scaled_regions(finding, scale))


def map_caption(analysis: Analysis, finding: FindingResult) -> str:
    """The figure's full caption and alt text: the finding, the value the map explains, each numbered box
    in words, and how to read the map."""
    return caption(figure_text(analysis, finding), list(finding.regions))
