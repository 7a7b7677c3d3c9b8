"""The templated report: Markdown for the UI, self-contained HTML for download, JSON for the API.

`report_context` turns an `Analysis` into one plain dict that every template reads, so the formats cannot
drift apart. The HTML environment autoescapes; the Markdown template passes every piece of user-supplied
text (finding labels, note spans, warnings, a file name) through the ``md`` filter (`escape_markdown`),
which neutralises HTML and Markdown control characters. Every report carries the disclaimer.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import numpy as np
from PIL import Image

from meddx.explain.methods import METHOD_CARDS, METHOD_NAMES
from meddx.io.study import ImageInfo
from meddx.notes import Concept, EvidenceItem
from meddx.report import wording
from meddx.report.figures import map_caption, map_figure
from meddx.result import MAX_FOLLOW_UPS, Analysis, FindingResult, Flagging, NotesReading

MAX_FIGURE_SIDE = 768
"""Images embedded in the HTML report are downscaled to at most this many pixels per side."""

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", ":": "&#58;", "@": "&#64;"}
_WHITESPACE = re.compile(r"\s+")
_ENTITY_RE = re.compile("[" + re.escape("".join(_ENTITIES)) + "]")


def escape_markdown(value: Any) -> str:
    """Render user-supplied text inert inside Markdown, as one line of literal text.

    HTML-significant characters (and ``:``/``@``, which start autolinks) become character entities, Markdown
    punctuation is backslash-escaped, and line breaks become spaces, so the text can neither open a tag,
    a link, an image or a table cell, nor start a heading or list.
    """
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", _WHITESPACE.sub(" ", str(value)))
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group()], text)


def code_span(value: Any) -> str:
    """Operator-supplied text (a model spec, a revision) as a Markdown code span."""
    text = " ".join(str(value).replace("`", "'").split())
    return f"`{text}`" if text else "`-`"


@dataclass(frozen=True)
class Segment:
    """A piece of a sentence; ``user`` marks text that came from a person (escaped, and emphasised)."""

    text: str
    user: bool = False


def _probability(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _locations(finding: FindingResult) -> str:
    """Where the map points: locations in the lungs first; regions outside the lungs (their words say so)
    after them, never as the finding's location."""
    inside = [r.location for r in finding.regions if r.location and r.in_lungs is not False]
    outside = [r.location for r in finding.regions if r.location and r.in_lungs is False]
    return "; ".join(
        part for part in (", ".join(dict.fromkeys(inside)), ", ".join(dict.fromkeys(outside))) if part
    )


def _ordered(findings: list[FindingResult]) -> list[FindingResult]:
    """Image first: flagged findings first, then by the image's value, highest first (never by the notes)."""
    return sorted(findings, key=lambda f: (not f.flagged, -f.image_probability))


def _threshold(finding: FindingResult) -> str:
    """The threshold as the table shows it: "–" without an operating point, marked when the user set it."""
    if finding.threshold is None:
        return "–"
    shown = wording.value(finding, finding.threshold)
    return f"{shown} (user-set)" if finding.operating_point == "user" else shown


def _scores(finding: FindingResult) -> str:
    """A finding's number for the summary: the image's (what it is ranked and flagged by), its kind, and
    what the notes did beside it."""
    shown = f"{wording.kind_words(finding)} from the image {wording.value(finding)}"
    change = wording.notes_change(finding)
    return f"{shown}; {change}" if change else shown


def _summary(findings: list[FindingResult], flagging: Flagging) -> list[Segment]:
    """One plain sentence that reads differently when something is flagged, or nothing can be."""
    flagged = [f for f in findings if f.flagged]
    if not findings:
        return [Segment("No finding was scored.")]
    if not flagged:
        top = max(findings, key=lambda f: f.image_probability)
        if not flagging.operating_points:
            return [
                Segment("Nothing is flagged: the scores are uncalibrated. On the image, the highest-ranked "),
                Segment("finding is "),
                Segment(top.label, user=True),
                Segment(f" ({_scores(top)})."),
            ]
        return [
            Segment("No finding reached its threshold. On the image, the highest was "),
            Segment(top.label, user=True),
            Segment(f" ({_scores(top)}; threshold {_threshold(top)})."),
        ]
    noun = (
        "1 finding reached its threshold: "
        if len(flagged) == 1
        else (f"{len(flagged)} findings reached their thresholds: ")
    )
    segments = [Segment(noun)]
    for index, finding in enumerate(flagged):
        if index:
            segments.append(Segment(", " if index < len(flagged) - 1 else " and "))
        segments.append(Segment(finding.label, user=True))
        segments.append(Segment(f" ({_scores(finding)})"))
    segments.append(Segment("."))
    return segments


def _notes_sentence(analysis: Analysis, evidence: list[dict]) -> str | None:
    if analysis.notes is None:
        return None
    adjusted = len({e["finding"] for e in evidence})
    concepts = len(analysis.notes.concepts)
    if not concepts:
        return "No concept relevant to these findings was found in the clinical notes."
    found = f"{concepts} concepts were read" if concepts != 1 else "1 concept was read"
    found += " from the clinical notes"
    if not adjusted:
        return f"{found}; none changed a finding's score."
    return f"{found}; they changed the score of {adjusted} finding{'s' if adjusted != 1 else ''}."


def _evidence_row(item: EvidenceItem, labels: dict[str, str]) -> dict:
    """One piece of evidence: what was read, what it did to one finding's odds (in words), and the source
    of its weight. The log-odds stay in the JSON."""
    return {
        "line": wording.evidence_line(item),
        "finding": labels.get(item.finding, item.finding),
    }


def _evidence(findings: list[FindingResult]) -> list[dict]:
    labels = {f.id: f.label for f in findings}
    return [_evidence_row(item, labels) for finding in findings for item in finding.evidence]


def _concept_row(concept: Concept) -> dict:
    display = concept.display or concept.name
    words = wording.concept_words(concept.name, display, concept.status, concept.value)
    return {"text": concept.text, "words": words}


def _concepts(notes: NotesReading | None) -> list[dict]:
    return [] if notes is None else [_concept_row(c) for c in notes.concepts]


def _image_data_uri(image: np.ndarray) -> str:
    """A uint8 image (gray or RGB), downscaled to `MAX_FIGURE_SIDE`, as a ``data:image/jpeg`` URI.

    JPEG at quality 90: these are display copies of colour overlays (~10x faster to encode than PNG);
    the film itself is never re-exported for diagnosis.
    """
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    picture.thumbnail((MAX_FIGURE_SIDE, MAX_FIGURE_SIDE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(analysis: Analysis, findings: list[FindingResult], embed: bool) -> list[dict]:
    """The highlighted films: one per finding with a map; the plain film when there are none."""
    figures = [
        {
            "label": f.label,
            "caption": f"{wording.kind_words(f)} from the image {wording.value(f)}: what this map explains",
            "locations": _locations(f),
            "alt": map_caption(analysis, f),
            "src": _image_data_uri(map_figure(analysis, f, max_side=MAX_FIGURE_SIDE)) if embed else None,
        }
        for f in findings
        if f.id in analysis.maps
    ]
    if not figures and analysis.preview is not None:
        figures.append(
            {
                "label": "Film as analysed",
                "caption": "no attention map was requested",
                "locations": "",
                "alt": "The film as analysed, without a map.",
                "src": _image_data_uri(analysis.preview) if embed else None,
            }
        )
    return figures


def _limitations(analysis: Analysis, findings: list[FindingResult], has_maps: bool) -> list[str]:
    model = analysis.model
    items = [
        f"Scores come from {model.spec} (revision {model.revision or 'unknown'}); other weights "
        "would give other scores. They are model outputs, not measured diagnostic accuracy.",
    ]
    sources = {p.source for p in analysis.flagging.operating_points}
    if analysis.scoring.mode in ("zero-shot", "both") and "calibration" not in sources:
        items.append(
            "Zero-shot scores compare the image with text prompts; they are not calibrated on clinical data, "
            "so they rank findings but flag none."
        )
    if "calibration" in sources:
        items.append(
            "Calibrated probabilities and thresholds were measured on one labelled data set (named above); "
            "on other patients, devices or views they can be wrong in either direction."
        )
    if "user" in sources:
        items.append(
            "The threshold was set by the user; its sensitivity and specificity were never measured."
        )
    if any(f.fine_tuned is not None for f in findings):
        items.append(
            "Fine-tuned scores come from a head trained on a public data set; its performance on this "
            "population and this equipment is unknown."
        )
    if has_maps:
        items.append(
            "Highlighted areas show where the model's score is sensitive (model attention), not a lesion "
            "segmentation; locations are approximate and use the patient's side (the viewer's left on a "
            "PA film is the patient's right)."
        )
    if analysis.notes is not None:
        items.append(
            "Evidence from the notes is read by rules that can miss negations, abbreviations and context; "
            "check each item against the notes."
        )
    items.append(
        "One image is read on its own: no prior films, no lateral view, no clinical examination. Images that "
        "are not frontal adult chest radiographs are outside what the model was built for."
    )
    return items


def _maps_note(analysis: Analysis, has_maps: bool) -> str | None:
    """Which attribution method drew the maps, and how locations are worded."""
    if not has_maps:
        return None
    explanation = analysis.explanation
    card = METHOD_CARDS.get(explanation.method)
    parts = [
        f"Maps and locations from {METHOD_NAMES[explanation.method]}.",
        card.verdict if card else "",
        explanation.location_note or "",
    ]
    return " ".join(p for p in parts if p)


def _created(value: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _image_facts(image: ImageInfo) -> str:
    parts = [image.source_format.upper(), f"{image.width} × {image.height} px"]
    if image.modality:
        parts.append(f"modality {image.modality}")
    if image.view_position:
        parts.append(f"view position {image.view_position}")
    return ", ".join(parts)


def _follow_ups(analysis: Analysis) -> tuple[list[dict], int]:
    """The follow-ups listed (urgent first, at most `MAX_FOLLOW_UPS`) and how many more were left out."""
    listed = analysis.follow_ups(MAX_FOLLOW_UPS)
    total = sum(1 for f in analysis.findings if f.flagged and f.follow_up)
    rows = [{"label": f.label, "text": f.follow_up, "urgent": f.follow_up_tier == "urgent"} for f in listed]
    return rows, total - len(listed)


def report_context(analysis: Analysis, *, filename: str | None = None, embed_images: bool = False) -> dict:
    """Everything the templates show, as plain values: the single source for every report format.

    Args:
        analysis: the result to report.
        filename: the upload's name, shown only when given (file names can identify a patient).
        embed_images: build base64 PNG data URIs for the figures (only the HTML report needs them).
    """
    findings = _ordered(analysis.findings)
    evidence = _evidence(findings)
    notes_given = analysis.notes is not None or bool(evidence)
    figures = _figures(analysis, findings, embed_images)
    has_maps = any(f.id in analysis.maps for f in findings)
    follow_ups, more_follow_ups = _follow_ups(analysis)
    return {
        "reference": analysis.reference,
        "flagging": analysis.flagging.statement,
        "calibrated": analysis.flagging.calibrated,
        "model": {
            "spec": analysis.model.spec,
            "revision": analysis.model.revision or "unknown",
            "card": analysis.model.card.line() if analysis.model.card else None,
        },
        "scoring_mode": analysis.scoring.mode,
        "created": _created(analysis.created),
        "processing": f"{analysis.timings.total_s:.1f} s",
        "version": analysis.version,
        "filename": filename,
        "image": _image_facts(analysis.image),
        "summary": _summary(findings, analysis.flagging),
        "notes_sentence": _notes_sentence(analysis, evidence),
        "findings": [
            {
                "label": f.label,
                "custom": f.custom,
                "flagged": f.flagged,
                "probability": wording.value(f, f.probability),
                "image_probability": wording.value(f),
                "kind": f.kind,
                "change": wording.notes_change(f) or "–",
                "fine_tuned": _probability(f.fine_tuned),
                "threshold": _threshold(f),
                "locations": _locations(f),
                "measurement": f.measurement or "",
            }
            for f in findings
        ],
        "show_image_only": notes_given,
        "kinds": sorted({wording.KIND_WORDS[f.kind] for f in findings if f.kind in wording.KIND_WORDS}),
        "show_flags": bool(analysis.flagging.operating_points),
        "show_fine_tuned": any(f.fine_tuned is not None for f in findings),
        "evidence": evidence,
        "concepts": _concepts(analysis.notes),
        "figures": figures,
        "maps_note": _maps_note(analysis, has_maps),
        "follow_ups": follow_ups,
        "more_follow_ups": more_follow_ups,
        "max_follow_ups": MAX_FOLLOW_UPS,
        "warnings": list(analysis.warnings),
        "not_chest": analysis.anatomy.check.warning() if analysis.anatomy is not None else None,
        "limitations": _limitations(analysis, findings, has_maps),
        "disclaimer": analysis.disclaimer,
    }


@cache
def _environment(kind: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("meddx.report", "templates"),
        autoescape=kind == "html",
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = escape_markdown
    env.filters["code"] = code_span
    return env


def render_markdown(analysis: Analysis, *, filename: str | None = None) -> str:
    """The report as Markdown (what the UI shows); user-supplied text is escaped."""
    context = report_context(analysis, filename=filename)
    return _environment("md").get_template("report.md.j2").render(context)


def render_html(analysis: Analysis, *, filename: str | None = None) -> str:
    """The report as one self-contained HTML page: inline CSS, images as PNG data URIs, nothing external."""
    context = report_context(analysis, filename=filename, embed_images=True)
    return _environment("html").get_template("report.html.j2").render(context)


def render_json(analysis: Analysis, *, filename: str | None = None) -> dict:
    """``analysis.to_dict()`` plus ``"report_markdown"``: what the API returns."""
    data = analysis.to_dict()
    data["report_markdown"] = render_markdown(analysis, filename=filename)
    return data


__all__ = ["escape_markdown", "render_html", "render_json", "render_markdown", "report_context"]
