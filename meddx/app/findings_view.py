"""The page's findings table: ranked by the image alone, each value shown as what it is (an uncalibrated
score on a bar, never a percentage; a calibrated probability as a percentage), what the notes change beside
it in words, the flag, and where its map is. The top `TOP_ROWS` findings show at once; the rest fold under
"Show all N findings" (the page stays short on a phone). Pure functions of an `Analysis`."""

from __future__ import annotations

import html

from meddx.report import wording
from meddx.result import PROBABILITY, Analysis, FindingResult

TOP_ROWS = 5
"""Findings shown before "Show all"."""


def image_first(analysis: Analysis) -> list[FindingResult]:
    """The findings as every surface ranks them: flagged first, then by the image's value (not the notes)."""
    return sorted(analysis.findings, key=lambda f: (f.flagged, f.image_probability), reverse=True)


def value_html(finding: FindingResult, number: float) -> str:
    """A value on a bar with its number: "0.73" for a score, "73 % calibrated" for a probability."""
    width = max(0.0, min(1.0, number)) * 100
    shown = html.escape(wording.value(finding, number))
    title = html.escape(wording.kind_words(finding))
    tag = ' <span class="meddx-muted">calibrated</span>' if finding.kind == PROBABILITY else ""
    return (
        f'<span class="meddx-value" title="{title}"><span class="meddx-bar" aria-hidden="true">'
        f'<span style="width:{width:.0f}%"></span></span>{shown}{tag}</span>'
    )


def _flag(finding: FindingResult) -> str:
    if not finding.flagged or finding.threshold is None:
        return '<span class="meddx-muted">not flagged</span>'
    source = ", set by the user, not measured" if finding.operating_point == "user" else ""
    threshold = html.escape(wording.value(finding, finding.threshold))
    return f'<span class="meddx-flag">⚑ flagged (image alone ≥ {threshold}{source})</span>'


def _map(finding: FindingResult, mapped: list[str]) -> str:
    if finding.id not in mapped:
        return '<span class="meddx-muted">no map</span>'
    index = mapped.index(finding.id)
    return (
        f'<button type="button" class="meddx-maplink" data-map-index="{index}">'
        f"map {index + 1} of {len(mapped)}, in “Where the model looked” below ↓</button>"
    )


def _change(finding: FindingResult) -> str:
    """The notes' change in one line of words, each piece of evidence on its own line under it."""
    clause = wording.notes_change(finding, reasons=False)
    if clause is None:
        return ""
    lines = "".join(
        f"<li>{html.escape(wording.evidence_line(e, with_source=False))}</li>" for e in finding.evidence
    )
    return f"{html.escape(clause[0].upper() + clause[1:])}:<ul>{lines}</ul>"


def _row(finding: FindingResult, mapped: list[str], notes: bool) -> str:
    cells = [
        f'<td data-label="Finding"><strong>{html.escape(finding.label)}</strong></td>',
        f'<td data-label="Image">{value_html(finding, finding.image_probability)}</td>',
    ]
    if notes:
        cells.append(f'<td data-label="What the notes change">{_change(finding)}</td>')
        cells.append(f'<td data-label="With notes">{value_html(finding, finding.probability)}</td>')
    cells.append(f'<td data-label="Flag">{_flag(finding)}</td>')
    cells.append(f'<td data-label="Map">{_map(finding, mapped)}</td>')
    return f"<tr>{''.join(cells)}</tr>"


def _table(rows: list[str], head: str, caption: str = "") -> str:
    caption = f"<caption>{caption}</caption>" if caption else ""
    body = "".join(rows)
    return (
        f'<table class="meddx-findings">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def kinds_sentence(analysis: Analysis) -> str:
    """What the numbers are, in one sentence."""
    kinds = {f.kind for f in analysis.findings}
    if kinds == {PROBABILITY}:
        return "Values are calibrated probabilities (shown as percentages), from the image alone."
    if PROBABILITY in kinds:
        return (
            "Values marked “calibrated” are probabilities; the others are uncalibrated model scores from 0 "
            "to 1 that rank findings and are not probabilities of disease."
        )
    return (
        "Values are uncalibrated model scores from 0 to 1: they rank findings on this film and are not "
        "probabilities of disease."
    )


def findings_html(analysis: Analysis) -> str:
    """The findings, image first: value, what the notes change, with notes, flag, map; the top few shown."""
    mapped = [fid for fid in analysis.explanation.mapped if fid in analysis.maps]
    notes = analysis.notes is not None
    names = ["Finding", "Image"]
    if notes:
        names += ["What the notes change", "With notes"]
    names += ["Flag", "Map"]
    head = "".join(f'<th scope="col">{n}</th>' for n in names)
    rows = [_row(f, mapped, notes) for f in image_first(analysis)]
    caption = "Ranked by the image alone" + (
        "; the notes' change is shown beside each finding and never changes the order" if notes else ""
    )
    parts = [
        f'<p class="meddx-flagging"><strong>Flags:</strong> {html.escape(analysis.flagging.statement)}</p>',
        f'<p class="meddx-kind">{html.escape(kinds_sentence(analysis))}</p>',
        _table(rows[:TOP_ROWS], head, caption),
    ]
    if len(rows) > TOP_ROWS:
        parts.append(
            f'<details class="meddx-more"><summary>Show all {len(rows)} findings</summary>'
            f"{_table(rows[TOP_ROWS:], head)}</details>"
        )
    return "".join(parts)
