"""A trained linear head on frozen image embeddings: checks and serving (`meddx.model.head_store`: its files).

A head scores each finding with a logistic output on the unit image embedding ``x``: the raw logit is
``w . x + b``, and the served probability is ``sigmoid(a * (w . x + b) + c)`` with the per-finding Platt
calibration ``(a, c)`` fitted on validation data (see `meddx.train.fit`). Heads start from the zero-shot
text directions (``w = logit_scale * (positive - negative)``, ``b = 0``), so an untrained head scores
exactly like zero-shot.

A head is saved as a folder (and a Hub repo) of three files:

- ``head.safetensors``: ``weight`` (F, D) and ``bias`` (F), float32;
- ``head.json``: finding ids and names, the encoder it was trained on (spec, model, revision, embedding
  size), calibration, operating thresholds and their rule, validation metrics, training settings, a data
  description (counts per label only), the date and the meddx version;
- ``README.md``: a Hugging Face model card (``meddx/model/head_card.md``).

Heads are named by a probe spec, like models: ``hf-hub:owner/name[@revision]`` or ``local-dir:/path``.

**Encoder check.** Embeddings are only comparable within one set of weights, so a head is refused
(`ModelError`) unless the loaded encoder has the same embedding size and the same identity: the same Hub
repo *and revision* (a downloaded ``local-dir:`` copy counts as its Hub origin, from
``meddx_source.json``), or, for a local folder with no recorded origin, byte-identical weights (sha256).
A different revision of the same repo is refused: its weights, and therefore its embeddings, differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meddx.errors import InputError, ModelError
from meddx.model.encoder import Encoder
from meddx.model.modes import MODES
from meddx.model.spec import HF_HUB, SOURCE_NAME, ModelSpec
from meddx.model.zero_shot import TextDirections

log = logging.getLogger(__name__)

HEAD_FORMAT = "meddx-linear-head"
HEAD_FORMAT_VERSION = 1
"""Each mode's rule in words, as a result states it."""
_EPS = 1e-6


@dataclass(frozen=True)
class EncoderIdentity:
    """Which weights produced an embedding.

    Attributes:
        spec: The spec the encoder was loaded with (for messages).
        model: The Hub repo id it comes from, or the spec of a local folder with no recorded origin.
        revision: The Hub commit, or ``sha256:<digest>`` of the weights file of an unversioned folder.
        embed_dim: The embedding size.
    """

    spec: str
    model: str
    revision: str
    embed_dim: int

    @property
    def key(self) -> str:
        """What must match for embeddings to be comparable: ``model@revision``, or the weights digest."""
        return self.revision if self.revision.startswith("sha256:") else f"{self.model}@{self.revision}"

    def to_dict(self) -> dict:
        """JSON-safe form, as stored in ``head.json``."""
        return {
            "spec": self.spec,
            "model": self.model,
            "revision": self.revision,
            "embed_dim": self.embed_dim,
        }

    def __str__(self) -> str:
        return f"{self.spec} ({self.model}@{self.revision}, {self.embed_dim}-d embeddings)"


def _weights_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def _embed_dim_from_files(folder: Path) -> int:
    """The embedding size a model folder's config states (an identity computed without loading the model)."""
    open_clip = folder / "open_clip_config.json"
    if open_clip.is_file():
        return int(json.loads(open_clip.read_text(encoding="utf-8"))["model_cfg"]["embed_dim"])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return int(config.get("projection_dim") or config["vision_config"]["hidden_size"])


def encoder_identity(encoder: Encoder) -> EncoderIdentity:
    """The identity of a loaded encoder (computed once per encoder; hashes weights only when unversioned)."""
    cached = encoder.__dict__.get("_identity")
    if cached is not None:
        return cached
    folder = encoder.resolved.folder
    embed_dim = int(getattr(encoder, "embed_dim", None) or _embed_dim_from_files(folder))
    spec = encoder.resolved.spec
    source_path = folder / SOURCE_NAME
    source = json.loads(source_path.read_text(encoding="utf-8")) if source_path.is_file() else {}
    if spec.scheme == HF_HUB:
        model, revision = spec.location, encoder.revision
    elif source.get("model") and source.get("revision"):
        model, revision = ModelSpec.parse(source["model"]).location, source["revision"]
    else:
        model, revision = str(spec), _weights_digest(encoder.resolved.weights)
    identity = EncoderIdentity(str(spec), model, revision, embed_dim)
    encoder.__dict__["_identity"] = identity
    return identity


class LinearHead(nn.Module):
    """One logistic output per finding on unit image embeddings: ``logits = x @ weight.T + bias``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().to(torch.float32).clone())
        self.bias = nn.Parameter(bias.detach().to(torch.float32).clone())

    @classmethod
    def from_directions(cls, directions: TextDirections) -> LinearHead:
        """The zero-shot scorer as a head: ``weight = logit_scale * direction``, ``bias`` the family's
        (`meddx.model.zero_shot.TextDirections`: ``positive - negative`` and 0 for CLIP-like models)."""
        weight = directions.logit_scale * directions.difference
        return cls(weight, torch.full((weight.shape[0],), float(directions.bias)))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, F) raw logits for (N, D) embeddings."""
        return embeddings @ self.weight.T + self.bias


class TrainedHead:
    """A loaded or freshly trained head: linear weights plus the ``head.json`` metadata.

    Args:
        linear: The weights.
        metadata: The ``head.json`` content (see the module docstring); checked against the weights.
        source: The probe spec it was loaded from, if any.
        revision: The Hub commit it was loaded at (``None`` for a local folder or a fresh head).

    Raises:
        ModelError: the metadata and the weights disagree (a damaged or hand-edited artifact).
    """

    def __init__(
        self, linear: LinearHead, metadata: dict, *, source: str | None = None, revision: str | None = None
    ) -> None:
        self.linear = linear.eval().requires_grad_(False)
        self.metadata = metadata
        self.source = source
        self.revision = revision
        try:
            if metadata.get("format") != HEAD_FORMAT:
                raise ValueError(f"format is {metadata.get('format')!r}, not {HEAD_FORMAT!r}")
            calibration = metadata["calibration"]
            self._scale = torch.tensor(calibration["scale"], dtype=torch.float32)
            self._shift = torch.tensor(calibration["bias"], dtype=torch.float32)
            count, dim = len(metadata["finding_ids"]), int(metadata["encoder"]["embed_dim"])
            vectors = (linear.bias, self._scale, self._shift)
            if linear.weight.shape != (count, dim) or any(v.shape != (count,) for v in vectors):
                raise ValueError(f"weights {tuple(linear.weight.shape)} do not fit {count} findings x {dim}")
            self.encoder = EncoderIdentity(**metadata["encoder"])
            self._thresholds = {mode: dict(metadata["thresholds"][mode]) for mode in MODES[1:]}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"The trained head {source or ''} is damaged or not a meddx head ({exc}). Train it again "
                "with `python -m meddx train`, or download it again."
            ) from exc

    @property
    def finding_ids(self) -> tuple[str, ...]:
        """The finding ids, in output order."""
        return tuple(self.metadata["finding_ids"])

    @property
    def labels(self) -> tuple[str, ...]:
        """Display names, in output order."""
        return tuple(self.metadata["labels"])

    @property
    def thresholds(self) -> dict[str, float]:
        """Operating threshold per finding id, on the calibrated fine-tuned probability."""
        return dict(self._thresholds["fine-tuned"])

    def threshold(self, finding_id: str, mode: str) -> float | None:
        """The head's operating threshold for a finding under a scoring mode (None: use the vocabulary's).

        "fine-tuned" thresholds apply to the calibrated head probability, "both" thresholds to the combined
        probability of `combine`; both were chosen on validation data. "zero-shot" has none.
        """
        _check_mode(mode)
        return None if mode == "zero-shot" else self._thresholds[mode].get(finding_id)

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse an encoder other than the one this head was trained on.

        Raises:
            ModelError: the embedding size, the model or its revision differ (see the module docstring).
        """
        loaded = encoder_identity(encoder)
        if loaded.embed_dim == self.encoder.embed_dim and loaded.key == self.encoder.key:
            return
        raise ModelError(
            f"This head was trained on {self.encoder}, but the loaded model is {loaded}. A head only works "
            "on embeddings from the exact model and revision it was trained on (another revision of the same "
            f"repo embeds images differently). Fix: load {self.encoder.spec} (MEDDX_MODEL or --model), or "
            f"train a head for this model: python -m meddx train --model {loaded.spec} --data ... --out ..."
        )

    def logits(self, embeddings: torch.Tensor, *, calibrated: bool = True) -> torch.Tensor:
        """(N, F) logits for (N, D) unit embeddings; calibrated (Platt) unless asked otherwise."""
        with torch.no_grad():
            logits = self.linear(embeddings.to(torch.float32))
            return logits * self._scale + self._shift if calibrated else logits

    def probabilities(self, embeddings: torch.Tensor, *, calibrated: bool = True) -> torch.Tensor:
        """(N, F) per-finding probabilities for (N, D) unit embeddings."""
        return torch.sigmoid(self.logits(embeddings, calibrated=calibrated))

    def predict(self, image_embedding: torch.Tensor) -> dict[str, float]:
        """Calibrated probability per finding id for one image's embedding, shaped (D,) or (1, D)."""
        embedding = image_embedding.reshape(-1, image_embedding.shape[-1])
        if embedding.shape[0] != 1:
            raise ValueError("predict takes one image's embedding; use probabilities() for a batch")
        values = self.probabilities(embedding)[0].tolist()
        return dict(zip(self.finding_ids, values, strict=True))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InputError(f"Unknown scoring mode {mode!r}; use one of: {', '.join(MODES)}.")


def _logit(p: float | np.ndarray) -> float | np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def combine(zero_shot: float, fine_tuned: float | None, mode: str) -> float:
    """The probability a finding is ranked and flagged by, under a scoring mode.

    - "zero-shot": the zero-shot probability.
    - "fine-tuned": the head's calibrated probability.
    - "both": the mean of the two in log-odds space, ``sigmoid((logit(z) + logit(f)) / 2)`` (the
      normalised geometric mean of the odds): agreement keeps the score, disagreement pulls it to the middle.

    Where the head does not cover a finding (``fine_tuned`` is None) every mode falls back to zero-shot.
    NumPy arrays work element-wise.

    Raises:
        InputError: unknown mode.
    """
    _check_mode(mode)
    if mode == "zero-shot" or fine_tuned is None:
        return zero_shot
    if mode == "fine-tuned":
        return fine_tuned
    return 1.0 / (1.0 + np.exp(-(_logit(zero_shot) + _logit(fine_tuned)) / 2))
