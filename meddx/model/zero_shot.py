"""Zero-shot scoring: each finding's probability from its positive and negative prompt ensembles.

For a finding with ensemble directions ``p`` (positive prompts) and ``n`` (negative prompts), and a unit
image embedding ``x``, the logit is ``s * x.d + b`` with the model's logit scale ``s``, and the probability
is its sigmoid. The direction ``d`` and bias ``b`` follow the family's scoring rule
(`meddx.model.encoder.Encoder.scoring`), which follows how the model was trained:

- ``softmax`` (CLIP-like: open_clip, transformers CLIP): ``d = p - n``, ``b = 0``, i.e. a two-way softmax over
  [positive, negative]. A contrastive softmax loss only ever compares texts with each other, so a single
  similarity has no absolute meaning; the comparison with the negative prompts is the model's answer.
- ``sigmoid`` (SigLIP): ``d = p``, ``b = logit_bias``. SigLIP was trained with a sigmoid loss on each
  image-text pair alone, so ``sigmoid(s * x.p + b)`` is the model's own probability that the film matches
  the positive prompts; a softmax against the negatives would drop the learned bias and ask for a ratio it
  was never trained to give. (Negative ensembles are still computed: heads start from them.)

Findings are independent (multi-label); there is no softmax across findings. Either way the zero-shot
logit is the one quantity the maps attribute.

Prompt ensembles are built with open_clip's ``build_zero_shot_classifier`` (mean of unit text embeddings
over templates, renormalised) on token ids trimmed to the longest prompt, and cached per finding for the
life of the encoder and on disk (a restart skips the text tower).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from meddx.model.encoder import Encoder
from meddx.model.vocabulary import Finding

log = logging.getLogger(__name__)
_DIRECTION_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextDirections:
    """Unit prompt-ensemble embeddings for a list of findings: ``positive`` and ``negative`` are (F, D)."""

    findings: tuple[Finding, ...]
    positive: torch.Tensor
    negative: torch.Tensor
    logit_scale: float
    scoring: str = "softmax"
    logit_bias: float = 0.0

    @property
    def difference(self) -> torch.Tensor:
        """(F, D): the direction ``d`` whose dot product with an image embedding is the finding's margin
        (``p - n`` for the two-way softmax, ``p`` for SigLIP's sigmoid)."""
        return self.positive if self.scoring == "sigmoid" else self.positive - self.negative

    @property
    def bias(self) -> float:
        """The logit's constant ``b``: the model's ``logit_bias`` for SigLIP's sigmoid, else 0."""
        return self.logit_bias if self.scoring == "sigmoid" else 0.0

    def logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, F) zero-shot logits for unit image embeddings (N, D)."""
        return zero_shot_logits(image_embeddings, self.difference, self.logit_scale, self.bias)


def zero_shot_logits(
    image_embeddings: torch.Tensor, difference: torch.Tensor, logit_scale: float, bias: float = 0.0
) -> torch.Tensor:
    """The zero-shot logit of every finding, ``s * x.d + b``: the one place this formula is written.

    Args:
        image_embeddings: unit image embeddings ``x``, (N, D).
        difference: per finding, the scoring direction ``d`` (`TextDirections.difference`), (F, D).
        logit_scale: the model's logit scale ``s``.
        bias: the family's logit bias ``b`` (`TextDirections.bias`; 0 for the two-way softmax).

    Returns:
        (N, F) logits; their sigmoid (`zero_shot_probabilities`) is each finding's probability.
    """
    logits = logit_scale * image_embeddings @ difference.T
    return logits + bias if bias else logits


MAX_CUSTOM_DIRECTIONS = 256  # custom labels' text directions kept in memory, least recently used dropped


def _ensemble(encoder: Encoder, phrases: list[str], templates: list[str]) -> torch.Tensor:
    """One unit embedding per phrase, averaged over templates: open_clip's prompt ensembling (as its
    ``build_zero_shot_classifier``: the mean of the prompts' unit embeddings, normalised).

    Every prompt goes through `Encoder.embed_texts` at once, which batches them by length.
    """
    prompts = [template.format(phrase) for phrase in phrases for template in templates]
    embeddings = encoder.embed_texts(prompts).reshape(len(phrases), len(templates), -1).mean(dim=1)
    return embeddings / embeddings.norm(dim=1, keepdim=True)  # (phrases, D), in the order given


def _unit_mean(embeddings: torch.Tensor) -> torch.Tensor:
    mean = embeddings.mean(dim=0)
    return mean / mean.norm()


def _key(finding: Finding) -> str:
    parts = (finding.positive, finding.negative, finding.templates_positive, finding.templates_negative)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _store_path(encoder: Encoder, cache_dir: Path) -> Path:
    return Path(cache_dir) / "text-directions" / f"{encoder.fingerprint}.safetensors"


def _load_store(encoder: Encoder, cache: dict, cache_dir: Path | None) -> None:
    """Fill the in-memory cache from disk once per encoder and folder (a cold start skips the text tower)."""
    if cache_dir is None:
        return
    path = _store_path(encoder, cache_dir)
    loaded = cache.setdefault("_loaded_from", set())
    if path in loaded:
        return
    loaded.add(path)
    if path.is_file():
        try:
            stored = load_file(str(path))
        except Exception:  # a damaged cache file is only a lost optimisation
            log.warning("ignoring an unreadable text-direction cache file")
            return
        for name, tensor in stored.items():
            key, sign = name.rsplit(".", 1)
            cache.setdefault(key, {})[sign] = tensor


def _save_store(encoder: Encoder, cache: dict, cache_dir: Path) -> None:
    path = _store_path(encoder, cache_dir)
    tensors = {f"{k}.{sign}": v[sign] for k, v in cache.items() if not k.startswith("_") for sign in v}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    except OSError:  # a read-only home is fine: the cache stays in memory
        log.info("text-direction cache not written (read-only cache dir)")


def text_directions(
    encoder: Encoder, findings: list[Finding], *, cache_dir: Path | None = None
) -> TextDirections:
    """Positive and negative ensemble embeddings for each finding.

    Vocabulary findings are computed once per model and kept in memory for the life of the encoder, and,
    when ``cache_dir`` is given (`meddx.config.Settings.cache_dir`: ``$MEDDX_CACHE_DIR``), on disk under
    ``cache_dir/text-directions/``, keyed by the model's fingerprint and the prompts. A user's custom
    labels are never written to disk, and only the `MAX_CUSTOM_DIRECTIONS` most recently used stay in
    memory.
    """
    cache = encoder.direction_cache
    with _DIRECTION_LOCK:
        _load_store(encoder, cache, cache_dir)
        custom: OrderedDict = cache.setdefault("_custom", OrderedDict())

        def known(f: Finding) -> dict | None:
            return custom.get(_key(f)) if f.custom else cache.get(_key(f))

        missing = [f for f in dict.fromkeys(findings) if known(f) is None]
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
                (custom if f.custom else cache)[_key(f)] = {
                    "positive": _unit_mean(torch.stack([groups["positive"][p] for p in f.positive])),
                    "negative": _unit_mean(torch.stack([groups["negative"][p] for p in f.negative])),
                }
            if cache_dir is not None and not all(f.custom for f in missing):
                _save_store(encoder, cache, cache_dir)
        entries = [known(f) for f in findings]
        for f in findings:
            if f.custom:
                custom.move_to_end(_key(f))
        while len(custom) > MAX_CUSTOM_DIRECTIONS:
            custom.popitem(last=False)
    return TextDirections(
        findings=tuple(findings),
        positive=torch.stack([e["positive"] for e in entries]).clone(),
        negative=torch.stack([e["negative"] for e in entries]).clone(),
        logit_scale=encoder.logit_scale,
        scoring=encoder.scoring,
        logit_bias=encoder.logit_bias,
    )


def zero_shot_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-finding probabilities from zero-shot logits: the sigmoid (= two-way softmax) of each."""
    return torch.sigmoid(logits)
