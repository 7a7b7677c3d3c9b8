"""The whole chain, one way: upload -> study -> scores -> (notes, fusion) -> maps and regions -> Analysis.

`analyze` imports no UI code; the Gradio app, the CLI, the benchmark and the tests all call it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from meddx import DISCLAIMER, __version__
from meddx.config import Settings
from meddx.encoder import Encoder, load_encoder
from meddx.imaging import ImagingLimits, Study, load_study
from meddx.scoring import text_directions, zero_shot_probabilities
from meddx.tower import TowerTail, stem
from meddx.vocabulary import Finding, load_vocabulary

SCORING_NOTE = (
    "zero-shot: per finding, a two-way softmax of the image's similarity to positive vs negative prompt "
    "ensembles, scaled by the model's logit scale; not calibrated on clinical data"
)


@dataclass
class FindingResult:
    """One finding's result. ``probability`` is what the finding is ranked and flagged by."""

    id: str
    label: str
    probability: float
    image_probability: float
    zero_shot: float
    threshold: float
    flagged: bool
    follow_up: str
    custom: bool = False
    fine_tuned: float | None = None
    evidence: list[dict] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)


@dataclass
class Analysis:
    """Everything meddx says about one film. ``to_dict()`` is the JSON the API and CLI return."""

    model: dict
    scoring: dict
    findings: list[FindingResult]
    image: dict
    warnings: list[str]
    timings: dict
    created: str
    notes: dict | None = None
    maps: dict[str, Any] = field(default_factory=dict, repr=False)
    disclaimer: str = DISCLAIMER
    version: str = __version__

    @property
    def flagged(self) -> list[FindingResult]:
        """Findings at or above their threshold, most probable first."""
        return [f for f in self.findings if f.flagged]

    def to_dict(self) -> dict:
        """JSON-safe dict; heatmaps are left out (the report and ``--include-maps`` embed them)."""
        data = asdict(self)
        data.pop("maps")
        return data


def _round(x: float) -> float:
    return round(float(x), 4)


def score_image(
    encoder: Encoder, study: Study, findings: list[Finding]
) -> tuple[torch.Tensor, torch.Tensor, TowerTail, object]:
    """One pass through the image tower: zero-shot probabilities (F,), stem tokens, the tail, geometry."""
    pixels, geometry = encoder.preprocess(study.to_pil("RGB"))
    directions = text_directions(encoder, findings)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale)
    with torch.inference_mode():
        tokens = stem(encoder, pixels[None])
        probabilities = zero_shot_probabilities(tail(tokens))[0]
    return probabilities, tokens.clone(), tail, geometry


def analyze(
    image: Any,
    notes: str | None = None,
    *,
    labels: list[str] | None = None,
    settings: Settings | None = None,
    filename: str | None = None,
) -> Analysis:
    """Analyse one chest film (path, bytes or file object) with optional clinical notes.

    Args:
        image: a path, raw bytes or a binary file object holding PNG, JPEG, BMP, TIFF, WebP or DICOM.
        notes: free-text clinical notes or history (never logged).
        labels: findings to score (names from the vocabulary or free text); None scores all.
        settings: model, limits and options; defaults to `Settings.from_env()`.
        filename: the upload's name, used only to word error messages.

    Raises:
        InputError: the image, notes or labels are unusable (the message is safe to show).
        ModelError: the model cannot be loaded (the message says how to fix it).
    """
    settings = settings or Settings.from_env()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    limits = settings.limits
    study = load_study(
        image,
        filename=filename,
        limits=ImagingLimits(
            max_file_bytes=limits.max_file_mb * 1024 * 1024,
            max_pixels=limits.max_pixels,
            min_side=limits.min_side,
        ),
    )
    timings["load_image_s"] = time.perf_counter() - start

    tick = time.perf_counter()
    encoder = load_encoder(settings.model, threads=settings.threads)
    findings = load_vocabulary().select(labels, max_labels=limits.max_labels)
    probabilities, _tokens, _tail, _geometry = score_image(encoder, study, findings)
    timings["score_s"] = time.perf_counter() - tick

    results = [
        FindingResult(
            id=f.id,
            label=f.name,
            probability=_round(p),
            image_probability=_round(p),
            zero_shot=_round(p),
            threshold=f.threshold,
            flagged=bool(p >= f.threshold),
            follow_up=f.follow_up,
            custom=f.custom,
        )
        for f, p in zip(findings, probabilities.tolist(), strict=True)
    ]
    results.sort(key=lambda r: r.probability, reverse=True)
    timings["total_s"] = time.perf_counter() - start
    return Analysis(
        model={
            "spec": encoder.spec,
            "revision": encoder.revision,
            "text_revision": encoder.resolved.text_revision,
        },
        scoring={"mode": "zero-shot", "method": SCORING_NOTE},
        findings=results,
        image=dict(study.metadata),
        warnings=list(study.warnings),
        timings={k: round(v, 4) for k, v in timings.items()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def warm_up(settings: Settings | None = None) -> Encoder:
    """Load the model and compute every finding's text directions, so the first request is fast."""
    settings = settings or Settings.from_env()
    encoder = load_encoder(settings.model, threads=settings.threads)
    text_directions(encoder, list(load_vocabulary().findings))
    return encoder


__all__ = ["Analysis", "FindingResult", "analyze", "replace", "score_image", "warm_up"]
