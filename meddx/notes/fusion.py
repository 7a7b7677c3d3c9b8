"""Combine image probabilities with evidence from the clinical notes, in log-odds, with every step listed.

For each finding::

    if the notes call the finding absent and the sum is > 0, or present and the sum is < 0:  adjustment = 0
    adjustment = clip(sum of deltas, -max_total, +max_total)
    if p_image >= high and adjustment < 0:  adjustment = max(adjustment, -max_fraction * logit(p_image))
    if p_image <= low and adjustment > 0:   adjustment = min(adjustment, -max_fraction * logit(p_image))
    probability = sigmoid(logit(p_image) + adjustment)

The deltas come from ``data/fusion_weights.yaml``: one per (concept, status, finding), plus combination
rules. A concept mentioned several times counts once, with the status that comes first in
`meddx.notes.status.PRECEDENCE`. A finding the notes call absent never gains from the notes, and one
they call present never loses ("no pneumonia" beside fever and cough leaves pneumonia where the image put
it). With ``max_fraction`` < 1 a strong image signal
(≥ 0.9 or ≤ 0.1 by default) can be moved toward 0.5 but never across it. A finding with no evidence, or
whose adjustment is exactly 0, keeps its image probability unchanged; ids the weights do not know
(custom labels) pass through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from meddx.data import load
from meddx.errors import InputError
from meddx.jsonable import as_json_dict
from meddx.model.vocabulary import load_vocabulary
from meddx.notes.reader import Concept
from meddx.notes.status import PRECEDENCE, Status

_EPS = 1e-6


@dataclass(frozen=True)
class EvidenceItem:
    """One adjustment to one finding, and why.

    For a combination rule, ``concept`` is the rule id, ``span`` runs from the first to the last of the
    mentions it needs, and ``text`` joins their texts with " + ". ``reason`` says the effect in words
    ("raises the odds of pneumonia about 1.6×"), without repeating the concept or its status (shown beside
    it) and without log-odds (``delta_logit`` holds the number); ``source`` says where the number comes
    from.
    """

    concept: str
    display: str
    status: str
    span: tuple[int, int]
    text: str
    finding: str
    delta_logit: float
    reason: str
    source: str = ""

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return as_json_dict(self)


@dataclass(frozen=True)
class FusedFinding:
    """A finding's image probability, the combined probability, and the evidence between them.

    ``adjustment`` is the log-odds actually applied (after the bounds); ``limited_by`` says which bound cut
    the sum of deltas: ``"stated_in_notes"`` (the notes call the finding absent, so it may not rise, or
    present, so it may not fall), ``"max_total"``, ``"strong_image"`` or None.
    """

    finding: str
    image_probability: float
    probability: float
    evidence: tuple[EvidenceItem, ...]
    adjustment: float = 0.0
    limited_by: str | None = None

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return as_json_dict(self)


@dataclass(frozen=True)
class Delta:
    """A log-odds change to one finding, with where the number comes from."""

    delta: float
    source: str


@dataclass(frozen=True)
class Condition:
    """One requirement of a combination rule."""

    concept: str
    status: str
    min_value: float | None = None


@dataclass(frozen=True)
class Combination:
    """Extra deltas when every condition holds (e.g. fever with productive cough)."""

    id: str
    name: str
    conditions: tuple[Condition, ...]
    deltas: Mapping[str, Delta]


@dataclass(frozen=True)
class FusionWeights:
    """Everything `fuse` needs; see ``data/fusion_weights.yaml`` for the meaning of each field."""

    max_total: float
    strong_high: float
    strong_low: float
    max_fraction: float
    stated_sign: Mapping[str, str]
    finding_mentions: Mapping[str, Delta]
    concepts: Mapping[str, Mapping[str, Mapping[str, Delta]]]
    combinations: tuple[Combination, ...]

    @classmethod
    def from_dict(cls, raw: dict) -> FusionWeights:
        """Build from the parsed YAML structure."""
        limits, strong = raw["limits"], raw["limits"]["strong_image"]
        weights = cls(
            max_total=float(limits["max_total"]),
            strong_high=float(strong["high"]),
            strong_low=float(strong["low"]),
            max_fraction=float(strong["max_fraction"]),
            stated_sign={Status(k): v for k, v in limits.get("stated_sign", {}).items()},
            finding_mentions={s: _delta(d) for s, d in raw["finding_mentions"].items()},
            concepts={
                concept: {status: {f: _delta(d) for f, d in per.items()} for status, per in statuses.items()}
                for concept, statuses in raw.get("concepts", {}).items()
            },
            combinations=tuple(
                Combination(
                    id=rule["id"],
                    name=rule["name"],
                    conditions=tuple(
                        Condition(c["concept"], c["status"], c.get("min_value")) for c in rule["all"]
                    ),
                    deltas={f: _delta(d) for f, d in rule["deltas"].items()},
                )
                for rule in raw.get("combinations", ())
            ),
        )
        if not set(weights.stated_sign.values()) <= {"no_gain", "no_loss"}:
            raise ValueError("fusion weights: limits.stated_sign values must be no_gain or no_loss")
        if not (
            weights.max_total > 0
            and 0 <= weights.max_fraction < 1
            and 0 < strong["low"] < 0.5 < strong["high"] < 1
        ):
            raise ValueError(
                "fusion weights: need max_total > 0, 0 <= max_fraction < 1, 0 < low < 0.5 < high < 1"
            )
        return weights

    @classmethod
    def from_yaml(cls, path: str | Path) -> FusionWeights:
        """Read a weights file."""
        return cls.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def default(cls) -> FusionWeights:
        """The packaged ``meddx/data/fusion_weights.yaml`` (read once per process)."""
        return _packaged_weights()


@lru_cache(maxsize=1)
def _packaged_weights() -> FusionWeights:
    return FusionWeights.from_dict(load("fusion_weights.yaml").value)


def _delta(raw: dict) -> Delta:
    return Delta(float(raw["delta"]), str(raw["source"]))


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _chosen_mentions(concepts: list[Concept]) -> dict[str, list[Concept]]:
    """Per concept name, its mentions with the winning status (`notes.status.PRECEDENCE`)."""
    rank = {s: i for i, s in enumerate(PRECEDENCE)}
    chosen: dict[str, list[Concept]] = {}
    for c in concepts:
        current = chosen.get(c.name)
        if current is None or rank[c.status] < rank[current[0].status]:
            chosen[c.name] = [c]
        elif rank[c.status] == rank[current[0].status]:
            current.append(c)
    return chosen


def _items(concepts: list[Concept], weights: FusionWeights) -> list[EvidenceItem]:
    items = []
    chosen = _chosen_mentions(concepts)
    for name, mentions in chosen.items():
        first = mentions[0]
        if (
            first.category == "finding"
            and first.status in weights.finding_mentions
            and name in first.supports
        ):
            deltas = {name: weights.finding_mentions[first.status]}
        else:
            deltas = weights.concepts.get(name, {}).get(first.status, {})
        for finding, d in deltas.items():
            items.append(
                EvidenceItem(
                    concept=name,
                    display=first.display,
                    status=first.status,
                    span=(first.start, first.end),
                    text=first.text,
                    finding=finding,
                    delta_logit=d.delta,
                    reason=effect_words(d.delta, finding),
                    source=d.source,
                )
            )
    for rule in weights.combinations:
        used = [_satisfying(chosen.get(c.concept, []), c) for c in rule.conditions]
        if not all(used):
            continue
        start, end = min(u.start for u in used), max(u.end for u in used)
        for finding, d in rule.deltas.items():
            items.append(
                EvidenceItem(
                    concept=rule.id,
                    display=rule.name,
                    status="present",
                    span=(start, end),
                    text=" + ".join(u.text for u in used),
                    finding=finding,
                    delta_logit=d.delta,
                    reason="together: " + effect_words(d.delta, finding),
                    source=d.source,
                )
            )
    return items


def effect_words(delta: float, finding: str) -> str:
    """A log-odds change in words: "raises the odds of pneumonia about 1.6×"."""
    name = _finding_names().get(finding, finding.replace("_", " "))
    if delta > 0:
        return f"raises the odds of {name} about {math.exp(delta):.1f}×"
    if delta < 0:
        return f"lowers the odds of {name} about {math.exp(-delta):.1f}×"
    return f"read and shown; moves nothing for {name}"


@lru_cache(maxsize=1)
def _finding_names() -> dict[str, str]:
    return {f.id: f.name.lower() for f in load_vocabulary().findings}


def _satisfying(mentions: list[Concept], condition: Condition) -> Concept | None:
    for c in mentions:
        if c.status == condition.status and (
            condition.min_value is None or (c.value is not None and c.value >= condition.min_value)
        ):
            return c
    return None


def _bounded(p: float, total: float, weights: FusionWeights, stated: str | None) -> tuple[float, str | None]:
    """The adjustment after the stated-sign bound, the ±max_total clip and the strong-image bound, and
    which bound applied."""
    sign = weights.stated_sign.get(stated) if stated else None
    if (sign == "no_gain" and total > 0) or (sign == "no_loss" and total < 0):
        return 0.0, "stated_in_notes"
    adjustment = min(max(total, -weights.max_total), weights.max_total)
    limited = "max_total" if adjustment != total else None
    base = _logit(p)
    if p >= weights.strong_high and adjustment < -weights.max_fraction * base:
        return -weights.max_fraction * base, "strong_image"
    if p <= weights.strong_low and adjustment > -weights.max_fraction * base:
        return -weights.max_fraction * base, "strong_image"
    return adjustment, limited


def fuse(
    image_probabilities: Mapping[str, float],
    concepts: list[Concept],
    *,
    weights: FusionWeights | None = None,
) -> dict[str, FusedFinding]:
    """Adjust each image probability by the note evidence that bears on it.

    Args:
        image_probabilities: finding id -> probability from the image model (custom labels allowed).
        concepts: from `meddx.notes.extract_concepts`.
        weights: defaults to the packaged ``fusion_weights.yaml``.

    Returns:
        finding id -> `FusedFinding`, for exactly the ids given, in their order.

    Raises:
        InputError: a probability is not a number between 0 and 1.
    """
    weights = weights or FusionWeights.default()
    stated = {
        name: mentions[0].status
        for name, mentions in _chosen_mentions(concepts).items()
        if mentions[0].category == "finding"
    }
    by_finding: dict[str, list[EvidenceItem]] = {}
    for item in _items(concepts, weights):
        by_finding.setdefault(item.finding, []).append(item)
    fused = {}
    for finding, p in image_probabilities.items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise InputError(f"The image probability for {finding!r} must be a number between 0 and 1.")
        p = float(p)
        evidence = tuple(by_finding.get(finding, ()))
        total = sum(e.delta_logit for e in evidence)
        if total == 0:
            fused[finding] = FusedFinding(finding, p, p, evidence)
            continue
        adjustment, limited = _bounded(p, total, weights, stated.get(finding))
        probability = _sigmoid(_logit(p) + adjustment) if adjustment else p
        fused[finding] = FusedFinding(finding, p, probability, evidence, adjustment, limited)
    return fused


__all__ = [
    "Combination",
    "Condition",
    "Delta",
    "EvidenceItem",
    "FusedFinding",
    "FusionWeights",
    "effect_words",
    "fuse",
]
