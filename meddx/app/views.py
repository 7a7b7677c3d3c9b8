"""What the page shows of an `Analysis`: the film at display size, one map per mapped finding, the findings
with their image-only and combined scores side by side, the notes highlighted by status (in words as well as
colour), the model panel. Pure functions of typed values; no event wiring here."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from meddx import __version__
from meddx.app.findings_view import findings_html, image_first
from meddx.app.session import FILM_TTL_S
from meddx.config import Settings
from meddx.explain.methods import METHOD_NAMES
from meddx.model.spec import CONFIG_NAME
from meddx.notes import Concept
from meddx.report import wording
from meddx.report.figures import map_caption, map_figure
from meddx.report.render import code_span
from meddx.result import Analysis

__all__ = ["findings_html", "image_first"]  # the findings table lives in `meddx.app.findings_view`

DISPLAY_SIDE = 1024
"""Films shown in the page are downscaled to at most this many pixels per side."""
CACHE_SWEEP = (300, 900)
"""``delete_cache``: every 5 minutes, delete what Gradio cached more than 15 minutes ago."""
VALUE_CATEGORIES = ("demographic", "vital")
"""Concepts read as values (age, sex, vitals): shown as values, never as "present"."""
STATUS_WORDS = {
    "present": "+ present",
    "absent": "− absent",
    "uncertain": "? uncertain",
    "historical": "⟲ past history",
    "no_history": "− no history of",
    "family": "⌂ family history",
    "hypothetical": "◇ advice / plan",
}
"""Each notes status as the highlighting names it (a sign and a word, not only a colour)."""
STATUS_COLOURS = {
    STATUS_WORDS["present"]: "#ffa8a8",
    STATUS_WORDS["absent"]: "#b2f2bb",
    STATUS_WORDS["uncertain"]: "#ffec99",
    STATUS_WORDS["historical"]: "#ced4da",
    STATUS_WORDS["no_history"]: "#e9ecef",
    STATUS_WORDS["family"]: "#d0bfff",
    STATUS_WORDS["hypothetical"]: "#a5d8ff",
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


def display_film(pixels: np.ndarray) -> np.ndarray:
    """A film (the windowed grayscale pixels), RGB, at display size."""
    gray = np.asarray(pixels, dtype=np.uint8)
    return np.repeat(_resize(gray, _display_scale(*gray.shape))[..., None], 3, axis=2)


def map_gallery(analysis: Analysis) -> list[tuple[np.ndarray, str]]:
    """One (figure, caption) per mapped finding, in the order the maps were drawn (image value first): the
    CLI's figure (`meddx.report.figures`: inferno with its key, numbered boxes, the value the map explains)
    at display size, and its full caption, which is also its alt text."""
    by_id = {f.id: f for f in analysis.findings}
    return [
        (map_figure(analysis, by_id[fid], max_side=DISPLAY_SIDE), map_caption(analysis, by_id[fid]))
        for fid in analysis.explanation.mapped
        if fid in analysis.maps
    ]


def captions_html(gallery: list[tuple[np.ndarray, str]]) -> str:
    """Every map's full caption under the gallery, numbered as the findings table numbers the maps."""
    if not gallery:
        return ""
    items = "".join(f"<li>{html.escape(caption)}</li>" for _, caption in gallery)
    return f'<ol class="meddx-captions" aria-label="What each map shows">{items}</ol>'


def random_weights(settings: Settings) -> bool:
    """Whether the model folder says its weights are random (``make-tiny-model`` writes that in its
    config): the page then says that its scores mean nothing."""
    spec = settings.model or ""
    if not spec.startswith("local-dir:"):
        return False
    try:
        config = json.loads((Path(spec.removeprefix("local-dir:")) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("meddx", {}).get("random_weights"))


def notes_label(concept: Concept | dict) -> str:
    """How the notes highlighting names one concept (typed, or as ``/notes`` returns it): a value as a
    value ("age 68", "male"), anything else by its status in words and a sign."""
    c = concept if isinstance(concept, dict) else concept.to_dict()
    status = str(c.get("status"))
    if c.get("category") in VALUE_CATEGORIES:
        name = str(c.get("name"))
        return wording.concept_words(name, str(c.get("display") or name), status, c.get("value"))
    return STATUS_WORDS.get(status, status)


def case_markdown(name: str, received: str, analysis: Analysis | None = None) -> str:
    """Which film (and when) the page's results belong to."""
    line = f"**Film:** {code_span(name)}, received {received}"
    if analysis is None:
        return f"{line}. Press Analyze (Ctrl+Enter)."
    method = METHOD_NAMES.get(analysis.explanation.method, analysis.explanation.method)
    when = analysis.created[11:19] + " UTC" if len(analysis.created) >= 19 else analysis.created
    maps = len(analysis.explanation.mapped)
    return (
        f"{line}; analysed {when} with {method} ({maps} map{'s' if maps != 1 else ''}, "
        f"{analysis.timings.total_s:.1f} s)."
    )


def highlighted_notes(notes: str | None, spans: Iterable[tuple[int, int, str]]) -> dict | None:
    """``gr.HighlightedText``'s value: the notes with each (start, end, status or label) span marked, or
    None.

    Overlapping spans keep the first (by start).
    """
    entities, end = [], 0
    for start, stop, status in sorted(spans):
        if start >= end:
            entities.append(
                {"entity": STATUS_WORDS.get(str(status), str(status)), "start": start, "end": stop}
            )
            end = stop
    return {"text": notes, "entities": entities} if notes else None


def download_name(analysis: Analysis, suffix: str) -> str:
    """``meddx-<case reference>.<suffix>``: the reference printed on the report, never the upload's name."""
    return f"meddx-{analysis.reference}.{suffix}"


def model_markdown(settings: Settings, analysis: Analysis | None = None) -> str:
    """The "Model and privacy" panel: the model (and its revision once known), head, defaults, limits."""
    if analysis is None:
        spec, revision = settings.model, "(shown after the first analysis)"
    else:
        spec, revision = analysis.model.spec, analysis.model.revision or "unknown"
    lines = [
        f"**Model** {code_span(spec)}, revision {code_span(revision)}",
        f"**Trained head** {code_span(settings.probe) if settings.probe else 'none (zero-shot scores only)'}",
        "**Calibration** "
        + (
            code_span(settings.calibration)
            if settings.calibration
            else "none: zero-shot scores are uncalibrated and flag nothing"
        ),
        f"**Default attribution** {code_span(settings.attribution_method)}, up to {settings.top_k_maps} maps",
        f"**Limits** files up to {settings.limits.max_file_mb:g} MB, notes up to "
        f"{settings.limits.max_note_chars:,} characters",
        f"**meddx** {__version__}. An upload is deleted as soon as it is read; the film as read stays in the "
        f"server's memory for this page only, until New patient, a new upload, closing the page or "
        f"{round(FILM_TTL_S / 60)} minutes without use, so that it can be analysed again. The images and "
        f"downloads shown here are deleted {CACHE_SWEEP[1] // 60} to {sum(CACHE_SWEEP) // 60} minutes later. "
        "Nothing is logged.",
    ]
    if analysis is not None:
        lines.insert(2, f"**Scoring** {analysis.scoring.mode}")
        if analysis.model.card is not None:
            lines.insert(1, f"**Model card** {analysis.model.card.line()}")
    return "\n\n".join(lines)
