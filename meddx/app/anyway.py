"""On the page, scores of a film without plausible lung fields are held back behind "Analyse anyway".

When the lung-field model found no plausible pair of lungs (`meddx.anatomy`), the page shows the warning
and keeps the scores out of sight: the top-findings label and the maps are not shown, the report is replaced
by a line that says why, and the findings table sits inside a closed ``<details>`` element whose summary is
"Analyse anyway". Opening it shows the scores (the browser does it; no new event). The API and the downloads
still return everything, with the warning.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from meddx.result import Analysis

SUMMARY = "Analyse anyway: show the scores for this image"
REPORT_HELD = (
    "**Report held back.** {warning} Open *Analyse anyway* above to see the scores; the downloads hold the "
    "full report."
)


def held_back(analysis: Analysis) -> str | None:
    """The warning when the page should hold the scores back, else None."""
    anatomy = analysis.anatomy
    return None if anatomy is None or anatomy.chest_film else anatomy.check.warning()


def findings_behind(warning: str, table: str) -> str:
    """The findings table inside a closed "Analyse anyway" disclosure (the warning is on the page's status
    line too)."""
    return (
        f'<p class="meddx-held"><strong>Scores held back.</strong> {html.escape(warning)}</p>'
        f'<details class="meddx-anyway"><summary>{SUMMARY}</summary>{table}</details>'
    )


def hold_back(
    analysis: Analysis, shown: dict[Any, Any], *, gallery, captions, table, report
) -> dict[Any, Any]:
    """``shown`` (the page's outputs) with the scores held back when the film has no plausible lungs."""
    warning = held_back(analysis)
    if warning is None:
        return shown
    return {
        **shown,
        gallery: gr.Gallery(value=None, visible=False),
        captions: "",
        table: findings_behind(warning, shown[table]),
        report: REPORT_HELD.format(warning=warning),
    }
