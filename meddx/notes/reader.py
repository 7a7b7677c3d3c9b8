"""Notes -> concepts with a status, a span and the findings they bear on.

A small rule-based engine in the style of ConText (Harkema et al., J Biomed Inform 2009), in pure Python:

1. the text is cleaned without moving any character (control characters become spaces, curly quotes and
   dashes plain ones), lower-cased, and split into clauses (sentence ends, ";", new lines that start a new
   item; "Dr.", "e.g." and decimals do not end a sentence);
2. one precompiled regular expression, built as a character trie over every phrase in the vocabularies
   (finding synonyms from ``findings.yaml``, concepts, fixed-status phrases, anchors and ignored phrases
   from ``note_concepts.yaml``, cues from ``context_cues.yaml``), finds every phrase that starts at every
   word; a few patterns read values (age, sex letter, temperature, SpO2, pack-years). Overlaps are
   resolved by length: the longest match wins and anything it overlaps is dropped;
3. each concept gets its status from the cues in its clause (see ``context_cues.yaml`` for the scope
   rules).

Note text is never logged."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from meddx.errors import InputError
from meddx.jsonable import as_json_dict
from meddx.model.vocabulary import load_vocabulary
from meddx.notes.context import Clause, clauses
from meddx.notes.durations import with_durations
from meddx.notes.lexicon import Lexicon, load_lexicon
from meddx.notes.matches import clean, longest_first, phrase_matches
from meddx.notes.sections import sections
from meddx.notes.status import Status, strongest
from meddx.notes.values import value_matches

MAX_CHARS = 20_000
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Concept:
    """One concept found in the notes.

    Attributes:
        name: normalised id, e.g. ``"effusion"``, ``"cough"``, ``"smoking"``, ``"age"``.
        display: display name.
        category: ``finding`` | ``symptom`` | ``risk_factor`` | ``history`` | ``device`` | ``demographic``
            | ``vital``.
        status: a `Status`: present, absent, uncertain, historical, no_history or family.
        start: offset of the matched span in the original text.
        end: offset just past the span (``text[start:end] == concept.text``).
        text: the matched span as written.
        supports: the image finding ids the concept bears on.
        value: a number read with it: age in years, temperature in °C, SpO2 in %, respiratory and heart
            rate per minute, systolic blood pressure in mmHg, pack-years.
        diastolic: the second number of a blood pressure, in mmHg.
        unit: the unit of ``value`` ("years", "°C", "%", "/min", "mmHg", "pack-years"), None without one.
        duration_days: how long a present symptom has lasted ("cough for 3 weeks": 21.0), None if not said.

    Demographics and vitals are values, not findings: their status is ``present`` unless a family cue
    makes them someone else's; show them with `describe` ("Age 68 years", "Male", "RR 30/min").
    """

    name: str
    display: str
    category: str
    status: Status
    start: int
    end: int
    text: str
    supports: tuple[str, ...]
    value: float | None = None
    diastolic: float | None = None
    unit: str | None = None
    duration_days: float | None = None

    @property
    def is_value(self) -> bool:
        """A demographic or a vital sign: a value to show, not something present or absent."""
        return self.category in ("demographic", "vital")

    def describe(self) -> str:
        """The concept in a clinician's words, without its status: "Age 68 years", "Male",
        "Respiratory rate 30/min", "Blood pressure 90/60 mmHg", "Fever 38.6 °C", "Cough for 3 weeks"."""
        words = self.display
        if self.value is not None:
            number = f"{self.value:g}" + (f"/{self.diastolic:g}" if self.diastolic is not None else "")
            unit = self.unit or ""
            words += f" {number}{unit}" if unit in ("%", "/min") else f" {number} {unit}".rstrip()
            if self.name == "smoking":
                words = f"Smoking, {self.value:g} pack-years"
        if self.duration_days is not None:
            words += f" for {_duration_words(self.duration_days)}"
        return words

    def to_dict(self) -> dict:
        """JSON-safe dict; ``words`` is `describe`."""
        return {**as_json_dict(self), "words": self.describe()}


_UNITS = {
    "age": "years",
    "temperature": "°C",
    "fever": "°C",
    "spo2": "%",
    "respiratory_rate": "/min",
    "tachypnoea": "/min",
    "heart_rate": "/min",
    "blood_pressure": "mmHg",
    "smoking": "pack-years",
}


def _duration_words(days: float) -> str:
    for unit, size in (("year", 365.25), ("month", 30.4), ("week", 7.0), ("day", 1.0)):
        n = days / size
        if n >= 1 and (unit == "day" or abs(n - round(n)) < 0.05):
            n = round(n, 1)
            return f"{n:g} {unit}{'' if n == 1 else 's'}"
    hours = round(days * 24)
    return f"{hours:g} hour{'' if hours == 1 else 's'}"


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (never valid text; it cannot be encoded as UTF-8 or JSON) replaced
    by U+FFFD, so that offsets carry over. Pasted or sent notes can hold them (a split emoji)."""
    return _SURROGATES.sub("\ufffd", text)


def extract_concepts(text: str, *, max_chars: int = MAX_CHARS) -> list[Concept]:
    """Find the concepts in clinical notes, each with its ConText status and exact span.

    Args:
        text: free-text notes or a report. HTML is read as plain text; "XXXX" anonymisation tokens are
            unknown words.
        max_chars: longest text accepted.

    Returns:
        Concepts in text order. Anchors ("heart size", "lungs") appear only when called normal, as the
        finding absent; phrases on the ignore list never appear.

    Raises:
        InputError: the text is not a string or is longer than ``max_chars``.
    """
    if not isinstance(text, str):
        raise InputError("Clinical notes must be text.")
    text = without_surrogates(text)
    if len(text) > max_chars:
        raise InputError(
            f"The clinical notes are too long: {len(text):,} characters; at most {max_chars:,} are accepted. "
            "Paste the relevant history and the current report only."
        )
    lex = load_lexicon()
    cleaned, low = clean(text)
    matches = longest_first([*phrase_matches(low, lex), *value_matches(text, low, lex)], len(low))
    governed = sections(low, lex.headings, lex.heading_status)
    concepts: list[Concept] = []
    index = 0
    spans = clauses(cleaned, low)
    for start, end in spans:
        inside = []
        while index < len(matches) and matches[index].start < end:
            if matches[index].start >= start:
                inside.append(matches[index])
            index += 1
        clause = Clause(low, end, inside, lex)
        for match in clause.concepts:
            status = Status(match.fixed) if match.fixed else clause.status(match)
            if status == Status.PRESENT and not match.immune and not clause.ends_history(start, match):
                status = governed.status(match.start) or status  # "PMH" then "COPD"; not "now cough"
            if match.anchor and status != Status.ABSENT:
                continue
            concepts.extend(
                Concept(
                    name=p.definition.name,
                    display=p.definition.display,
                    category=p.definition.category,
                    status=_for_category(status, p.definition.category, lex),
                    start=p.start,
                    end=p.end,
                    text=text[p.start : p.end],
                    supports=p.definition.supports,
                    value=p.value,
                    diastolic=p.diastolic,
                    unit=_UNITS.get(p.definition.name) if p.value is not None else None,
                )
                for p in match.parts
            )
    return with_durations(_settle_pack_years(concepts), low, spans)


def _for_category(status: Status, category: str, lex: Lexicon) -> Status:
    """ "No history of X": no_history for a finding or symptom, absent for a risk factor (data)."""
    return lex.negated_history.get(category, status) if status == Status.NO_HISTORY else status


def _settle_pack_years(concepts: list[Concept]) -> list[Concept]:
    """Pack-years say how much, not when: they take "historical" from an ex-smoker mention elsewhere."""
    if not any(c.name == "smoking" and c.status == Status.HISTORICAL for c in concepts):
        return concepts
    return [
        replace(c, status=Status.HISTORICAL)
        if c.name == "smoking" and c.value is not None and c.status == Status.PRESENT
        else c
        for c in concepts
    ]


def finding_statuses(concepts: Iterable[Concept]) -> dict[str, Status]:
    """One status per image finding mentioned, over all of its mentions.

    Only findings of the image vocabulary (``findings.yaml``) count; family-history mentions are not the
    patient's and are left out. When a finding is mentioned several times, `PRECEDENCE` decides:
    present > uncertain > historical > absent > no_history.
    """
    known = {f.id for f in load_vocabulary().findings}
    mentions: dict[str, list[Status]] = {}
    for concept in concepts:
        if concept.category == "finding" and concept.name in known and concept.status != Status.FAMILY:
            mentions.setdefault(concept.name, []).append(concept.status)
    return {name: strongest(statuses) for name, statuses in mentions.items()}


__all__ = ["MAX_CHARS", "Concept", "extract_concepts", "finding_statuses", "without_surrogates"]
