"""The words every surface uses for a finding's number and for what the notes did, so that the page, the
reports and the CLI cannot say it differently.

- A value is a *score* (uncalibrated: two decimals, never a percentage) or a *probability* (a calibration or
  a trained head made it: a percentage), by the finding's ``kind`` (`meddx.result.SCORE`, `PROBABILITY`).
- What the notes did is said as a change in the odds, in words ("the notes raise the odds about 1.6-fold:
  fever, productive cough"), never in log-odds (those stay in the JSON).
- A value read from the notes is shown as a value ("age 68", "temperature 38.5 °C"), a past mention as
  "past history".
"""

from __future__ import annotations

import math
import re

from meddx.notes import EvidenceItem
from meddx.result import PROBABILITY, FindingResult

KIND_WORDS = {
    "score": "uncalibrated model score (ranks findings; not a probability of disease)",
    "probability": "calibrated probability",
}
"""What a finding's number is, in words, by its ``kind``."""
STATUS_WORDS = {
    "present": "present",
    "absent": "absent",
    "uncertain": "uncertain",
    "historical": "past history",
    "no_history": "no past history",
    "family": "family history",
    "hypothetical": "advice or a plan (not evidence)",
}
"""Each notes status in the words a clinician uses (a past mention is history, not "present")."""
VALUE_UNITS = {
    "age": ("age", "{:g}"),
    "temperature": ("temperature", "{:g} °C"),
    "fever": ("fever", "{:g} °C"),
    "spo2": ("SpO2", "{:g} %"),
    "respiratory_rate": ("RR", "{:g}/min"),
    "heart_rate": ("HR", "{:g}/min"),
    "pack_years": ("", "{:g} pack-years"),
}
"""Concepts read with a number: how the number is shown (the name, then the value and its unit)."""
SEX = {"male": "male", "female": "female"}
NO_CHANGE = 0.02
"""A change in the odds smaller than this (about 2 %) is "no change"."""


def value(finding: FindingResult, number: float | None = None) -> str:
    """One of the finding's numbers (default: the image's) as its kind is shown: "0.73" or "73 %"."""
    number = finding.image_probability if number is None else number
    return f"{number:.0%}".replace("%", " %") if finding.kind == PROBABILITY else f"{number:.2f}"


def kind_words(finding: FindingResult) -> str:
    """ "uncalibrated model score", "calibrated probability" or "trained-head probability"."""
    if finding.kind != PROBABILITY:
        return "uncalibrated model score"
    return {"calibration": "calibrated probability", "trained head": "trained-head probability"}.get(
        finding.operating_point or "", "probability"
    )


def fold(ratio: float) -> str:
    """A ratio of odds in words: "1.6-fold"; "2-fold"."""
    size = ratio if ratio >= 1 else 1 / ratio
    return f"{size:.1f}-fold" if size < 9.95 else f"{size:.0f}-fold"


def notes_change(finding: FindingResult, *, reasons: bool = True) -> str | None:
    """What the notes did to the finding, in one clause: "the notes raise the odds about 1.6-fold: fever,
    productive cough" (without the reasons when not ``reasons``); None when the notes bear on nothing here."""
    if not finding.evidence:
        return None
    ratio = finding.odds_ratio
    names = ", ".join(dict.fromkeys(_evidence_name(e) for e in finding.evidence)) if reasons else ""
    if abs(math.log(ratio)) < math.log1p(NO_CHANGE):
        return f"the notes change nothing here ({names})" if names else "the notes change nothing here"
    way = "raise" if ratio > 1 else "lower"
    clause = f"the notes {way} the odds about {fold(ratio)}"
    return f"{clause}: {names}" if names else clause


def _evidence_name(item: EvidenceItem) -> str:
    status = str(item.status)
    name = item.display or item.concept
    if status == "present" or status not in STATUS_WORDS:
        return name
    return f"{name} ({STATUS_WORDS[status]})"


def evidence_line(item: EvidenceItem, *, with_source: bool = True) -> str:
    """One piece of evidence in one line: “hx COPD”: COPD, past history: raises the odds 1.3-fold (source);
    the source of the weight only ``with_source``."""
    ratio = math.exp(item.delta_logit)
    if abs(item.delta_logit) < math.log1p(NO_CHANGE):
        effect = "no change"
    else:
        effect = f"{'raises' if ratio > 1 else 'lowers'} the odds {fold(ratio)}"
    status = STATUS_WORDS.get(str(item.status), str(item.status))
    line = f"“{item.text}”: {item.display or item.concept}, {status}: {effect}"
    source = source_of(item) if with_source else ""
    return f"{line} ({source})" if source else line


_SOURCE = re.compile(r"Source:\s*(.+?)\s*$", re.S)


def source_of(item: EvidenceItem) -> str:
    """The source the evidence weight cites (the end of its reason), or ""."""
    found = _SOURCE.search(item.reason or "")
    return found.group(1) if found else ""


def concept_words(name: str, display: str, status: str, number: float | None) -> str:
    """How a concept read in the notes is named: a value as a value ("age 68", "RR 30/min"), sex as a word,
    anything else with its status ("past history", "absent")."""
    if name in SEX:
        return SEX[name]
    if number is not None:
        label, unit = VALUE_UNITS.get(name, (display.lower(), "{:g}"))
        shown = unit.format(round(number, 1))
        return f"{label} {shown}".strip()
    return f"{display or name}: {STATUS_WORDS.get(str(status), str(status))}"
