"""The notes' evidence one concept at a time, in a clinician's words: what `fuse` lists per finding, grouped.

`fuse` keeps one `EvidenceItem` per (concept, finding), with its log-odds: that is the data (and the
JSON). A reader wants one line per piece of evidence: "Smoking (stated: “smoker”): raises the odds of
nodule about 1.6×, mass about 1.6×, emphysema about 2.0×"; the words read are quoted only when they differ
from the concept's name ("COPD (in the history): ..."). `by_concept` builds those lines; the words
never repeat the concept or its status, and carry no log-odds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meddx.jsonable import as_json_dict
from meddx.notes.fusion import EvidenceItem, FusedFinding, effect_words
from meddx.notes.status import Status

STATUS_PHRASES: dict[str, str] = {
    Status.PRESENT: "stated",
    Status.ABSENT: "ruled out",
    Status.UNCERTAIN: "possible",
    Status.HISTORICAL: "in the history",
    Status.NO_HISTORY: "no history of it",
    Status.FAMILY: "in the family",
    Status.HYPOTHETICAL: "advice or a plan only",
}
"""How an evidence line names the status of what the notes say ("in the history", never "present")."""


@dataclass(frozen=True)
class ConceptEvidence:
    """One piece of evidence from the notes and everything it does.

    Attributes:
        concept: concept id (or combination rule id).
        display: display name.
        status: its status in the notes.
        span: where it was read (offsets in the notes).
        text: the words read.
        effects: (finding id, log-odds change) for each finding it moves (or lists with 0).
        words: one line for a clinician, e.g. 'Fever (stated: “febrile”): raises the odds of pneumonia
            about 1.6×, tuberculosis about 1.2×'.
    """

    concept: str
    display: str
    status: str
    span: tuple[int, int]
    text: str
    effects: tuple[tuple[str, float], ...]
    words: str

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return as_json_dict(self)


def _joined(effects: list[tuple[str, float]]) -> str:
    phrases = [effect_words(delta, finding) for finding, delta in effects]
    moved = [p for (_, d), p in zip(effects, phrases, strict=True) if d != 0]
    if not moved:
        return "read and shown; moves no score"
    # "raises the odds of A about 1.6×, B about 1.2×": the verb once per direction
    out, verb = [], None
    for phrase in moved:
        head, _, rest = phrase.partition(" the odds of ")
        out.append(rest if head == verb else f"{head} the odds of {rest}")
        verb = head
    return ", ".join(out)


def by_concept(items: Iterable[EvidenceItem] | Mapping[str, FusedFinding]) -> list[ConceptEvidence]:
    """One `ConceptEvidence` per concept (in order of first mention) from evidence items or `fuse`'s
    result."""
    if isinstance(items, Mapping):
        items = [e for fused in items.values() for e in fused.evidence]
    grouped: dict[str, list[EvidenceItem]] = {}
    for item in items:
        grouped.setdefault(item.concept, []).append(item)
    out = []
    for concept, group in sorted(grouped.items(), key=lambda kv: kv[1][0].span):
        first = group[0]
        effects = tuple((e.finding, e.delta_logit) for e in group)
        phrase = STATUS_PHRASES.get(first.status, str(first.status))
        said = "" if first.text.casefold() == first.display.casefold() else f": “{first.text}”"
        words = f"{first.display} ({phrase}{said}): {_joined(list(effects))}"
        out.append(
            ConceptEvidence(concept, first.display, first.status, first.span, first.text, effects, words)
        )
    return out


__all__ = ["STATUS_PHRASES", "ConceptEvidence", "by_concept"]
