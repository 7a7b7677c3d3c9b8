"""The finding vocabulary (``data/findings.yaml``): names, synonyms, prompts, thresholds, follow-up."""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from meddx.data import DataFile, load
from meddx.errors import DataFileError, InputError

MAX_LABEL_CHARS = 80
SUGGESTION_CUTOFF = 0.8
"""How alike (difflib's ratio, 0-1) a label and a vocabulary term must be for "did you mean": "effusoin"
and "effusion" score 0.88, "left pleural effusoin" and "pleural effusion" 0.81; "hiatus hernia" nothing."""
TIERS = ("urgent", "routine")
"""Follow-up tiers, most pressing first (``tier`` in ``findings.yaml``)."""


@dataclass(frozen=True)
class Finding:
    """One finding the image model scores."""

    id: str
    name: str
    synonyms: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    threshold: float
    follow_up: str
    templates_positive: tuple[str, ...]
    templates_negative: tuple[str, ...]
    custom: bool = False
    tier: str = "routine"
    """How soon ``follow_up`` matters when the finding is flagged: "urgent" or "routine" (`TIERS`)."""

    def prompts(self) -> tuple[list[str], list[str]]:
        """The positive and negative prompt ensembles: every template filled with every phrase."""
        pos = [t.format(p) for p in self.positive for t in self.templates_positive]
        neg = [t.format(p) for p in self.negative for t in self.templates_negative]
        return pos, neg


@dataclass(frozen=True)
class Vocabulary:
    """All known findings, in file order, plus the rules for custom labels."""

    findings: tuple[Finding, ...]
    raw: dict

    def finding(self, finding_id: str) -> Finding:
        """Look a finding up by id; raise `KeyError` if unknown."""
        for finding in self.findings:
            if finding.id == finding_id:
                return finding
        raise KeyError(finding_id)

    def lookup(self, label: str) -> Finding | None:
        """A known finding by id, display name or synonym (case-insensitive), else None."""
        key = _normalise(label)
        for finding in self.findings:
            names = {finding.id.replace("_", " "), finding.name.lower(), *finding.synonyms}
            if key in {_normalise(n) for n in names}:
                return finding
        return None

    def suggest(self, label: str) -> Finding | None:
        """The finding whose id, name or synonym is most like ``label`` (at least `SUGGESTION_CUTOFF`), else
        None: "effusoin" suggests Pleural effusion. An exact match (`lookup`) is not a suggestion."""
        terms = {}
        for finding in self.findings:
            for term in (finding.id.replace("_", " "), finding.name.lower(), *finding.synonyms):
                terms.setdefault(_normalise(term), finding)
        close = difflib.get_close_matches(_normalise(label), terms, n=1, cutoff=SUGGESTION_CUTOFF)
        return terms[close[0]] if close else None

    def near_misses(self, findings: list[Finding]) -> list[str]:
        """A "did you mean" warning for each free-text finding that is close to a vocabulary finding."""
        warnings = []
        for finding in findings:
            near = self.suggest(finding.name) if finding.custom else None
            if near is not None:
                warnings.append(
                    f'"{finding.name}" is not a finding meddx knows, so it was scored as a free-text finding '
                    f'with generated prompts; did you mean "{near.name}" (id {near.id})?'
                )
        return warnings

    def check_known(self, labels: list[str], *, argument: str = "findings") -> None:
        """Check that every label is a vocabulary finding (id, name or synonym); free text is not allowed.

        Raises:
            InputError: a label is unknown; the message names it, suggests the closest finding if one is
                close, and lists the ids.
        """
        for label in labels:
            if not label.strip() or self.lookup(label) is not None:
                continue
            shown = _visible(label)[:MAX_LABEL_CHARS]
            near = self.suggest(label)
            hint = f' Did you mean "{near.id}" ({near.name})?' if near else ""
            raise InputError(
                f'{argument} holds "{shown}", which is not a finding id.{hint} The ids are: '
                f"{', '.join(f.id for f in self.findings)}; free-text findings go in custom_findings."
            )

    def custom(self, label: str) -> Finding:
        """A finding for a free-text label typed by a user, with generated prompts."""
        spec = self.raw["custom_label"]
        clean = _visible(label)
        if not clean or len(clean) > MAX_LABEL_CHARS:
            raise InputError(
                f"Finding labels must be 1-{MAX_LABEL_CHARS} characters long; one has {len(clean)}."
            )
        if not re.search(r"[A-Za-z]", clean):
            raise InputError(
                "Finding labels are scored with English prompts, so each needs at least one Latin letter; "
                f"one ({len(clean)} characters) has none."
            )
        templates = self.raw["templates"]
        return Finding(
            id=_slug(clean),
            name=clean,
            synonyms=(clean.lower(),),
            positive=tuple(p.format(clean) for p in spec["positive"]),
            negative=tuple(p.format(clean) for p in spec["negative"]),
            threshold=float(spec["threshold"]),
            follow_up=spec["follow_up"],
            templates_positive=tuple(templates["positive"]),
            templates_negative=tuple(templates["negative"]),
            custom=True,
            tier=_tier(spec.get("tier", "routine")),
        )

    def select(self, labels: list[str] | None, *, max_labels: int = 64) -> list[Finding]:
        """Findings for a user's label list (known names map to the vocabulary); None means all.

        Duplicates are dropped; an empty list or more than ``max_labels`` raises `InputError`.
        """
        if labels is None:
            return list(self.findings)
        distinct = {_normalise(label) for label in labels if label.strip()}
        if len(distinct) > max_labels:  # before any label is built: 50,000 labels are refused at once
            raise InputError(
                f"Too many findings ({len(distinct)}); at most {max_labels} can be scored at once."
            )
        chosen: dict[str, Finding] = {}
        for label in labels:
            if not label.strip():
                continue
            finding = self.lookup(label) or self.custom(label)
            chosen.setdefault(finding.id, finding)
        if not chosen:
            raise InputError(
                "The finding list is empty: give at least one finding, or leave it blank for all."
            )
        if len(chosen) > max_labels:
            raise InputError(
                f"Too many findings ({len(chosen)}); at most {max_labels} can be scored at once."
            )
        return list(chosen.values())


def _visible(text: str) -> str:
    """``text`` with control and format characters (e.g. bidi overrides) as spaces, whitespace collapsed."""
    return " ".join("".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text).split())


def _normalise(text: str) -> str:
    return _visible(text.lower().replace("_", " "))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "label"


def parse_labels(text: str | None) -> list[str] | None:
    """Split a comma or newline separated label string; blank means all findings (None)."""
    if text is None or not text.strip():
        return None
    return [part.strip() for part in re.split(r"[,\n;]", text) if part.strip()]


def _tier(value: str) -> str:
    if value not in TIERS:
        raise DataFileError(f"findings.yaml: tier: expected one of {', '.join(TIERS)}, got {value!r}")
    return value


def _finding(item: DataFile, templates: DataFile) -> Finding:
    return Finding(
        id=item["id"].text(),
        name=item["name"].text(),
        synonyms=tuple(s.lower() for s in item.get("synonyms", []).texts()),
        positive=item["positive"].texts(),
        negative=item["negative"].texts(),
        threshold=item["threshold"].number(low=0.0, high=1.0),
        follow_up=item.get("follow_up", "").value or "",
        templates_positive=templates["positive"].texts(),
        templates_negative=templates["negative"].texts(),
        tier=_tier(item.get("tier", "routine").text()),
    )


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """Read and check ``meddx/data/findings.yaml`` once (`meddx.data.load`).

    Raises:
        DataFileError: a value in the file is missing or of the wrong kind (the message names the key).
    """
    data = load("findings.yaml")
    templates = data["templates"]
    findings = tuple(_finding(item, templates) for item in data["findings"].items())
    ids = [f.id for f in findings]
    if len(set(ids)) != len(ids):
        raise DataFileError(
            f"findings.yaml: findings: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}"
        )
    return Vocabulary(findings, data.mapping())
