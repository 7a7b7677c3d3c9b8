"""Zero-shot scoring: each finding's probability from its positive and negative prompt ensembles.

For a finding with ensemble directions ``p`` (positive prompts) and ``n`` (negative prompts), and a unit
image embedding ``x``, the logit is ``s * (x.p - x.n)`` with the model's logit scale ``s``, and the
probability is its sigmoid: exactly a two-way softmax over [positive, negative]. Findings are independent
(multi-label); there is no softmax across findings.

Prompt ensembles are built with open_clip's ``build_zero_shot_classifier`` (mean of unit text embeddings
over templates, renormalised) on token ids trimmed to the longest prompt, and cached per finding for the
life of the encoder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from meddx.encoder import Encoder
from meddx.vocabulary import Finding

_DIRECTION_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextDirections:
    """Unit prompt-ensemble embeddings for a list of findings: ``positive`` and ``negative`` are (F, D)."""

    findings: tuple[Finding, ...]
    positive: torch.Tensor
    negative: torch.Tensor
    logit_scale: float

    @property
    def difference(self) -> torch.Tensor:
        """(F, D): the direction whose dot product with an image embedding is the finding's margin."""
        return self.positive - self.negative

    def logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, F) zero-shot logits for unit image embeddings (N, D)."""
        return self.logit_scale * image_embeddings @ self.difference.T


def _ensemble(encoder: Encoder, phrases: list[str], templates: list[str]) -> torch.Tensor:
    """One unit embedding per phrase, averaged over templates (open_clip's prompt ensembling)."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    weights = build_zero_shot_classifier(
        encoder.model, encoder.tokenize, phrases, templates, num_classes_per_batch=None, device="cpu"
    )
    return weights.T  # (phrases, D)


def _unit_mean(embeddings: torch.Tensor) -> torch.Tensor:
    mean = embeddings.mean(dim=0)
    return mean / mean.norm()


def text_directions(encoder: Encoder, findings: list[Finding]) -> TextDirections:
    """Positive and negative ensemble embeddings for each finding, computed once per finding and model."""
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = encoder.__dict__.setdefault(
        "_direction_cache", {}
    )

    def key(f: Finding) -> tuple:
        return (f.positive, f.negative, f.templates_positive, f.templates_negative)

    with _DIRECTION_LOCK:
        missing = [f for f in dict.fromkeys(findings) if key(f) not in cache]
        if missing:
            groups = {}
            for sign in ("positive", "negative"):
                phrases = list(dict.fromkeys(p for f in missing for p in getattr(f, sign)))
                templates = list(getattr(missing[0], f"templates_{sign}"))
                if any(list(getattr(f, f"templates_{sign}")) != templates for f in missing):
                    raise ValueError("findings scored together must share prompt templates")
                embeds = _ensemble(encoder, phrases, templates)
                groups[sign] = dict(zip(phrases, embeds, strict=True))
            for f in missing:
                pos = _unit_mean(torch.stack([groups["positive"][p] for p in f.positive]))
                neg = _unit_mean(torch.stack([groups["negative"][p] for p in f.negative]))
                cache[key(f)] = (pos, neg)
        pairs = [cache[key(f)] for f in findings]
    return TextDirections(
        findings=tuple(findings),
        positive=torch.stack([p for p, _ in pairs]),
        negative=torch.stack([n for _, n in pairs]),
        logit_scale=encoder.logit_scale,
    )


def zero_shot_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-finding probabilities from zero-shot logits: the sigmoid (= two-way softmax) of each."""
    return torch.sigmoid(logits)
