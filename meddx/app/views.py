"""What the page shows of an `Analysis`: the film at display size, one annotation per mapped finding, the
notes highlighted by status, the model panel. Pure functions of typed values; no event wiring here."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from meddx import __version__
from meddx.config import Settings
from meddx.report.render import code_span
from meddx.result import Analysis, FindingResult

DISPLAY_SIDE = 1024
"""Films shown in the page are downscaled to at most this many pixels per side."""
CACHE_SWEEP = (300, 900)
"""``delete_cache``: every 5 minutes, delete what Gradio cached more than 15 minutes ago."""
MAX_ANNOTATIONS = 5
MAP_COLOURS = ["#e8590c", "#1c7ed6", "#ae3ec9", "#2f9e44", "#f08c00"]
STATUS_COLOURS = {
    "present": "#ffa8a8",
    "absent": "#b2f2bb",
    "uncertain": "#ffec99",
    "historical": "#ced4da",
    "no_history": "#e9ecef",
    "family": "#d0bfff",
}


def _display_scale(height: int, width: int) -> float:
    return min(1.0, DISPLAY_SIDE / max(height, width))


def _resize(array: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return array
    size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))
    return np.asarray(Image.fromarray(array.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))


def display_film(analysis: Analysis) -> np.ndarray:
    """The analysed film, RGB, at display size."""
    gray = np.asarray(analysis.preview, dtype=np.uint8)
    return np.repeat(_resize(gray, _display_scale(*gray.shape))[..., None], 3, axis=2)


def _mask(analysis: Analysis, finding: FindingResult, shape: tuple[int, int]) -> np.ndarray:
    """One finding's annotation: its heatmap as translucent colour, its regions as opaque outlines."""
    mask = np.zeros(shape, np.float32)
    scale = shape[0] / np.asarray(analysis.preview).shape[0]
    if finding.id in analysis.maps:
        heat = analysis.maps[finding.id].on_film(max_side=max(shape))[: shape[0], : shape[1]]
        mask[: heat.shape[0], : heat.shape[1]] = np.where(heat >= 0.25, 0.65 * heat, 0.0)
    for region in finding.regions:
        x0, y0, x1, y1 = (max(0, round(v * scale)) for v in region.box)
        edge = max(2, shape[0] // 200)
        mask[y0:y1, x0 : x0 + edge] = mask[y0:y1, max(x1 - edge, 0) : x1] = 1.0
        mask[y0 : y0 + edge, x0:x1] = mask[max(y1 - edge, 0) : y1, x0:x1] = 1.0
    return mask


def annotated(analysis: Analysis) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The film with one annotation per finding that has a map or regions (most probable first)."""
    film = display_film(analysis)
    annotations = [
        (_mask(analysis, f, film.shape[:2]), f"{f.label} ({f.probability:.2f})")
        for f in analysis.findings
        if f.id in analysis.maps or f.regions
    ]
    return film, annotations[:MAX_ANNOTATIONS]


def colour_map(annotations: list[tuple[np.ndarray, str]]) -> dict[str, str]:
    """One colour per annotation label, in order."""
    return {label: MAP_COLOURS[i % len(MAP_COLOURS)] for i, (_, label) in enumerate(annotations)}


def highlighted_notes(notes: str | None, spans: Iterable[tuple[int, int, str]]) -> dict | None:
    """``gr.HighlightedText``'s value: the notes with each (start, end, status) span marked, or None.

    Overlapping spans keep the first (by start).
    """
    entities, end = [], 0
    for start, stop, status in sorted(spans):
        if start >= end:
            entities.append({"entity": status, "start": start, "end": stop})
            end = stop
    return {"text": notes, "entities": entities} if notes else None


def download_name(analysis: Analysis, suffix: str) -> str:
    """``meddx-<created stamp>.<suffix>``: names the downloads without naming the upload."""
    stamp = "".join(ch for ch in analysis.created if ch.isalnum())[:15] or "report"
    return f"meddx-{stamp}.{suffix}"


def model_markdown(settings: Settings, analysis: Analysis | None = None) -> str:
    """The "Model and privacy" panel: the model (and its revision once known), head, defaults, limits."""
    if analysis is None:
        spec, revision = settings.model, "(shown after the first analysis)"
    else:
        spec, revision = analysis.model.spec, analysis.model.revision or "unknown"
    lines = [
        f"**Model** {code_span(spec)}, revision {code_span(revision)}",
        f"**Trained head** {code_span(settings.probe) if settings.probe else 'none (zero-shot scores only)'}",
        f"**Default attribution** {code_span(settings.attribution_method)}, up to {settings.top_k_maps} maps",
        f"**Limits** files up to {settings.limits.max_file_mb:g} MB, notes up to "
        f"{settings.limits.max_note_chars:,} characters",
        f"**meddx** {__version__}. Uploads are deleted after each analysis; the images and downloads shown "
        f"here are deleted {CACHE_SWEEP[1] // 60} to {sum(CACHE_SWEEP) // 60} minutes later. Nothing is "
        "flagged or logged.",
    ]
    if analysis is not None:
        lines.insert(2, f"**Scoring** {analysis.scoring.mode}")
    return "\n\n".join(lines)
