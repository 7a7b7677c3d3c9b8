"""What one analysis returns, typed all the way down; JSON is built once, at the edge, by `Analysis.to_dict`.

The JSON schema (``"schema_version"``, documented in the README under "Result JSON") is pinned by
``tests/test_result_schema.py``: change it only together with `SCHEMA_VERSION`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import cv2
import numpy as np

from meddx import DISCLAIMER, __version__
from meddx.explain.overlay import FilmMap, overlay, to_png_base64
from meddx.explain.regions import Region
from meddx.io.study import DicomSource, ImageInfo
from meddx.model.card import ModelCard
from meddx.notes import Concept, EvidenceItem

if TYPE_CHECKING:
    from meddx.anatomy.reading import Anatomy

SCHEMA_VERSION = 4
"""Version of the JSON that `Analysis.to_dict` returns (the API's ``/analyze`` result and the CLI's).
2: ``reference`` and ``flagging`` (operating points and the statement about calibration); per finding,
``threshold`` may be null, ``operating_point``, ``follow_up_tier``, and ``follow_up`` only when flagged.
3: per finding ``kind`` (`SCORE` or `PROBABILITY`: what ``probability`` and ``image_probability`` are) and
``notes_odds_ratio`` (what the notes did to the odds, 1.0 for nothing); findings are listed image first
(flagged first, then by ``image_probability``), never by the value with the notes. Each notes concept has
``diastolic``, ``unit``, ``duration_days`` and ``words`` (the concept in a clinician's words); each evidence
item has ``source``, and its ``reason`` is words without log-odds; the status ``hypothetical`` (advice or a
plan). ``anatomy`` (lung fields found, chest-film check, CTR); per finding ``measurement`` (the CTR text
beside cardiomegaly); per region ``in_lungs``; ``model.card`` (family, weights and revision, licence and
gating, input size, cost of one analysis here, calibrated or not)."""
SCORE = "score"
"""A finding's ``kind`` without a calibration or trained head: an uncalibrated model score in [0, 1] that
ranks findings; it is not a probability of disease and is never shown as a percentage."""
PROBABILITY = "probability"
"""A finding's ``kind`` when a calibration or a trained head, fitted on labelled films, made the value."""

MAX_FOLLOW_UPS = 3
"""Most follow-ups a report lists (`Analysis.follow_ups`): urgent first, then by image value."""
UNCALIBRATED = (
    "The scores are uncalibrated model outputs: no operating point has been measured for them, so no finding "
    "is flagged and no follow-up is suggested. Findings are ranked by score only; a score is not a "
    "probability of disease."
)


def case_reference(created: str, film: np.ndarray | None) -> str:
    """A reference that ties a report to its analysis and film without naming anyone: the analysis time
    (UTC, to the second) and the first 8 hex digits of the sha256 of the analysed film's pixels, e.g.
    ``20250304-050607-1a2b3c4d`` (the same film analysed again gets the same last part)."""
    digits = "".join(ch for ch in created if ch.isdigit())[:14].ljust(14, "0")
    stamp = f"{digits[:8]}-{digits[8:]}"
    if film is None:
        return stamp
    pixels = np.ascontiguousarray(film)
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(pixels.tobytes())
    return f"{stamp}-{digest.hexdigest()[:8]}"


@dataclass(frozen=True)
class ModelInfo:
    """The image-text model that produced the scores: its spec, the revisions actually loaded, its card."""

    spec: str
    revision: str | None
    text_revision: str | None = None
    card: ModelCard | None = None

    def to_dict(self) -> dict:
        return {
            "spec": self.spec,
            "revision": self.revision,
            "text_revision": self.text_revision,
            "card": None if self.card is None else self.card.to_dict(),
        }


@dataclass(frozen=True)
class ProbeInfo:
    """The trained head used, if any."""

    spec: str
    revision: str | None

    def to_dict(self) -> dict:
        return {"spec": self.spec, "revision": self.revision}


@dataclass(frozen=True)
class ScoringInfo:
    """How the image probabilities were made: the mode, its rule in words, and the head."""

    mode: str
    rule: str
    probe: ProbeInfo | None = None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "rule": self.rule, "probe": self.probe and self.probe.to_dict()}


@dataclass(frozen=True)
class OperatingPoint:
    """Where some findings' thresholds come from: a calibration or a trained head (measured on labelled
    data), or the user (not measured)."""

    source: str
    """"calibration", "trained head" or "user"."""
    spec: str | None
    """The calibration folder or head spec (None for a user-set threshold)."""
    rule: str
    """How the thresholds were chosen and on what, in words."""
    findings: tuple[str, ...]
    """The finding ids whose flags it decides."""

    @property
    def measured(self) -> bool:
        """Whether the thresholds were measured on labelled data (not set by the user)."""
        return self.source != "user"

    def to_dict(self) -> dict:
        return {"source": self.source, "spec": self.spec, "rule": self.rule, "findings": list(self.findings)}


@dataclass(frozen=True)
class Flagging:
    """How findings were flagged: the operating points used and a plain statement about calibration."""

    statement: str = UNCALIBRATED
    operating_points: tuple[OperatingPoint, ...] = ()

    @property
    def calibrated(self) -> bool:
        """Whether any finding's flag rests on a measured operating point."""
        return any(p.measured for p in self.operating_points)

    def to_dict(self) -> dict:
        return {
            "calibrated": self.calibrated,
            "statement": self.statement,
            "operating_points": [p.to_dict() for p in self.operating_points],
        }


@dataclass(frozen=True)
class Timings:
    """Seconds spent reading the film, scoring (with the notes), explaining, and in all."""

    load_s: float
    score_s: float
    explain_s: float
    total_s: float

    def to_dict(self) -> dict:
        return {
            "load_s": self.load_s,
            "score_s": self.score_s,
            "explain_s": self.explain_s,
            "total_s": self.total_s,
        }


@dataclass(frozen=True)
class NotesReading:
    """What was read in the notes: every concept, and one status per image finding mentioned."""

    concepts: tuple[Concept, ...]
    findings: dict[str, str]

    def to_dict(self) -> dict:
        findings = {name: str(status) for name, status in self.findings.items()}
        return {"concepts": [c.to_dict() for c in self.concepts], "findings": findings}


@dataclass(frozen=True)
class Explanation:
    """Which method drew the maps, which findings got one, and how their locations are worded."""

    method: str
    mapped: tuple[str, ...]
    location_note: str | None

    def to_dict(self) -> dict:
        return {"method": self.method, "mapped": list(self.mapped), "location_note": self.location_note}


@dataclass
class FindingResult:
    """One finding's result. ``image_probability`` (the image alone) is what the finding is ranked by and
    what the flag compares with ``threshold``, the operating point measured on images alone;
    ``probability`` adds the notes. ``kind`` says what both values are: `SCORE` (uncalibrated) or
    `PROBABILITY` (a calibration or a trained head made them).

    ``threshold`` is None when no operating point covers the finding (never flagged); ``operating_point``
    names its source ("calibration", "trained head", "user") or is None. ``follow_up`` (and its tier,
    "urgent" or "routine") is given only for a flagged finding.
    """

    id: str
    label: str
    probability: float
    image_probability: float
    zero_shot: float
    threshold: float | None
    flagged: bool
    follow_up: str
    custom: bool = False
    kind: str = SCORE
    operating_point: str | None = None
    follow_up_tier: str | None = None
    fine_tuned: float | None = None
    note_adjustment: float = 0.0
    evidence: list[EvidenceItem] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    measurement: str | None = None
    """A measurement shown beside the finding (the CTR estimate beside cardiomegaly), or None."""

    @property
    def odds_ratio(self) -> float:
        """What the notes did to the finding's odds: e^(log-odds adjustment); 1.0 when nothing."""
        return math.exp(self.note_adjustment)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "probability": self.probability,
            "image_probability": self.image_probability,
            "zero_shot": self.zero_shot,
            "threshold": self.threshold,
            "operating_point": self.operating_point,
            "flagged": self.flagged,
            "follow_up": self.follow_up,
            "follow_up_tier": self.follow_up_tier,
            "custom": self.custom,
            "fine_tuned": self.fine_tuned,
            "note_adjustment": self.note_adjustment,
            "notes_odds_ratio": round(self.odds_ratio, 3),
            "evidence": [e.to_dict() for e in self.evidence],
            "regions": [r.to_dict() for r in self.regions],
            "measurement": self.measurement,
        }


@dataclass
class Analysis:
    """Everything meddx says about one film. ``to_dict()`` is the JSON the API and CLI return.

    ``preview`` is the windowed grayscale film (uint8 H x W) and ``maps`` holds, per finding id with a map,
    a `meddx.explain.overlay.FilmMap` (``maps[id].on_film(max_side=...)`` gives the float32 map in [0, 1] at
    the size a consumer needs); `overlay` blends one on the film. Neither goes into the JSON unless
    ``include_maps`` asked for base64 PNG overlays.
    """

    model: ModelInfo
    scoring: ScoringInfo
    findings: list[FindingResult]
    image: ImageInfo
    warnings: list[str]
    timings: Timings
    created: str
    explanation: Explanation
    notes: NotesReading | None = None
    flagging: Flagging = field(default_factory=Flagging)
    """The operating points behind the flags; without any, the scores are said to be uncalibrated."""
    preview: np.ndarray | None = field(default=None, repr=False)
    maps: dict[str, FilmMap] = field(default_factory=dict, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    """The film's unit image embedding (D,), float32, when `meddx.pipeline.analyze` was asked to keep it
    (feedback); never in the JSON."""
    source: DicomSource | None = field(default=None, repr=False)
    """A DICOM film's references and the header a DICOM SR must repeat (`meddx.interop` writes SR and
    FHIR from it); identifiers, so never in the JSON, a report or a log."""
    include_maps: bool = False
    anatomy: Anatomy | None = field(default=None, repr=False)
    """The lung fields, chest-film check and CTR (`meddx.anatomy.reading`)."""
    disclaimer: str = DISCLAIMER
    version: str = __version__

    def overlay(self, finding_id: str, *, max_side: int | None = None) -> np.ndarray:
        """The film with one finding's map blended over it (RGB uint8), at most ``max_side`` pixels wide."""
        film, heatmap = self.preview, self.maps[finding_id].on_film(max_side=max_side)
        if heatmap.shape != film.shape[:2]:
            film = cv2.resize(film, heatmap.shape[::-1], interpolation=cv2.INTER_AREA)
        outline = self.anatomy.outline(*heatmap.shape) if self.anatomy is not None else None
        return overlay(film, heatmap, outline=outline)

    @cached_property
    def reference(self) -> str:
        """`case_reference`: the analysis time and a digest of the film, on the report and in the JSON."""
        return case_reference(self.created, self.preview)

    @property
    def flagged(self) -> list[FindingResult]:
        """Flagged findings (image probability at or above a measured or user-set threshold), in order."""
        return [f for f in self.findings if f.flagged]

    def follow_ups(self, limit: int = MAX_FOLLOW_UPS) -> list[FindingResult]:
        """Flagged findings with a follow-up, urgent first, then most probable first; at most ``limit``."""
        with_step = [f for f in self.findings if f.flagged and f.follow_up]
        return sorted(with_step, key=lambda f: (f.follow_up_tier != "urgent", -f.image_probability))[:limit]

    def to_dict(self) -> dict:
        """The JSON object (schema `SCHEMA_VERSION`); maps only if ``include_maps`` (base64 PNG overlays).

        Built field by field: the film and the maps are never copied.
        """
        data = {
            "schema_version": SCHEMA_VERSION,
            "reference": self.reference,
            "model": self.model.to_dict(),
            "scoring": self.scoring.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "image": self.image.to_dict(),
            "warnings": list(self.warnings),
            "timings": self.timings.to_dict(),
            "created": self.created,
            "notes": self.notes and self.notes.to_dict(),
            "flagging": self.flagging.to_dict(),
            "explanation": self.explanation.to_dict(),
            "anatomy": self.anatomy.to_dict() if self.anatomy is not None else None,
            "disclaimer": self.disclaimer,
            "version": self.version,
        }
        if self.include_maps:
            data["maps_png"] = {fid: to_png_base64(self.overlay(fid)) for fid in self.maps}
        return data
