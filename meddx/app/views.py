"""What the page shows of an `Analysis`: the film at display size, one map per mapped finding, the findings
with their image-only and combined scores side by side, the notes highlighted by status (in words as well as
colour), the model panel. Pure functions of typed values; no event wiring here."""

from __future__ import annotations

import html
from collections.abc import Iterable

import cv2
import numpy as np
from PIL import Image

from meddx import __version__
from meddx.app.session import FILM_TTL_S
from meddx.config import Settings
from meddx.explain.methods import METHOD_NAMES
from meddx.report.render import code_span
from meddx.result import Analysis, FindingResult

DISPLAY_SIDE = 1024
"""Films shown in the page are downscaled to at most this many pixels per side."""
CACHE_SWEEP = (300, 900)
"""``delete_cache``: every 5 minutes, delete what Gradio cached more than 15 minutes ago."""
MAX_ANNOTATIONS = 5
MAP_COLOURS = ["#e8590c", "#1c7ed6", "#ae3ec9", "#2f9e44", "#f08c00"]
STATUS_WORDS = {
    "present": "+ present",
    "absent": "− absent",
    "uncertain": "? uncertain",
    "historical": "⟲ past history",
    "no_history": "− no history of",
    "family": "⌂ family history",
}
"""Each notes status as the highlighting names it (a sign and a word, not only a colour)."""
STATUS_COLOURS = {
    STATUS_WORDS["present"]: "#ffa8a8",
    STATUS_WORDS["absent"]: "#b2f2bb",
    STATUS_WORDS["uncertain"]: "#ffec99",
    STATUS_WORDS["historical"]: "#ced4da",
    STATUS_WORDS["no_history"]: "#e9ecef",
    STATUS_WORDS["family"]: "#d0bfff",
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


def map_image(analysis: Analysis, finding: FindingResult) -> np.ndarray:
    """One finding's map over the film at display size, with its regions boxed (RGB uint8)."""
    image = np.ascontiguousarray(analysis.overlay(finding.id, max_side=DISPLAY_SIDE))
    scale = image.shape[0] / np.asarray(analysis.preview).shape[0]
    edge = max(2, image.shape[0] // 250)
    for region in finding.regions:
        x0, y0, x1, y1 = (round(v * scale) for v in region.box)
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (255, 255, 255), edge + 2)
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (20, 20, 20), edge)
    return image


def map_caption(analysis: Analysis, finding: FindingResult) -> str:
    """What one map shows, in words (also its alt text)."""
    method = METHOD_NAMES.get(analysis.explanation.method, analysis.explanation.method)
    where = "; ".join(f"{r.location} ({r.score:.2f})" for r in finding.regions) or "no region stood out"
    return (
        f"{finding.label}: {method} map over the film, image score {finding.image_probability:.2f}. "
        f"Boxed: {where}."
    )


def map_gallery(analysis: Analysis) -> list[tuple[np.ndarray, str]]:
    """One (image, caption) per mapped finding, in the order the maps were drawn (image score first)."""
    by_id = {f.id: f for f in analysis.findings}
    return [
        (map_image(analysis, by_id[fid]), map_caption(analysis, by_id[fid]))
        for fid in analysis.explanation.mapped
        if fid in analysis.maps
    ]


def image_first(analysis: Analysis) -> list[FindingResult]:
    """The findings ranked by their image-only probability (before the notes)."""
    return sorted(analysis.findings, key=lambda f: f.image_probability, reverse=True)


def _change(finding: FindingResult) -> str:
    """The notes' change to one finding, as HTML: the difference in points and each reason."""
    if not finding.evidence:
        return '<span class="meddx-muted">none</span>'
    points = round(100 * (finding.probability - finding.image_probability))
    arrow = "▲" if points > 0 else "▼" if points < 0 else "="
    reasons = "".join(
        f"<li>{html.escape(e.display)} ({html.escape(str(e.status))}): {html.escape(e.reason)}</li>"
        for e in finding.evidence
    )
    return f"<strong>{arrow} {points:+d} points</strong><ul>{reasons}</ul>"


def findings_html(analysis: Analysis) -> str:
    """Every finding, image-only first: image score, with notes, the notes' change and why, flag, map."""
    mapped = set(analysis.maps)
    rows = []
    for f in image_first(analysis):
        source = ", set by the user, not measured" if f.operating_point == "user" else ""
        flag = (
            f'<span class="meddx-flag">⚑ flagged (image alone ≥ {f.threshold:.2f}{source})</span>'
            if f.flagged
            else '<span class="meddx-muted">not flagged</span>'
        )
        has_map = "✓ map below" if f.id in mapped else '<span class="meddx-muted">no map</span>'
        rows.append(
            "<tr>"
            f'<td data-label="Finding"><strong>{html.escape(f.label)}</strong></td>'
            f'<td data-label="Image alone">{f.image_probability:.0%}</td>'
            f'<td data-label="With notes">{f.probability:.0%}</td>'
            f'<td data-label="Change from notes">{_change(f)}</td>'
            f'<td data-label="Flag">{flag}</td>'
            f'<td data-label="Map">{has_map}</td>'
            "</tr>"
        )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("Finding", "Image alone", "With notes", "Change from notes", "Flag", "Map")
    )
    return (
        f'<p class="meddx-flagging"><strong>Flags:</strong> {html.escape(analysis.flagging.statement)}</p>'
        '<table class="meddx-findings"><caption>Scores from the image alone, then with the notes '
        "(model outputs, not diagnoses)</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


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
    """``gr.HighlightedText``'s value: the notes with each (start, end, status) span marked, or None.

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
