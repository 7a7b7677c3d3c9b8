"""One scoring pass through the image tower (`score_image`), kept as a `ScoredImage` for the maps to reuse."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from meddx.model.encoder import Encoder
from meddx.model.geometry import Geometry
from meddx.model.tower import TowerTail, run_stem
from meddx.model.zero_shot import TextDirections, zero_shot_logits, zero_shot_probabilities


@dataclass(frozen=True)
class ScoredImage:
    """The result of one pass through the image tower, reused by the maps and the trained head.

    Attributes:
        pixels: the preprocessed film (3, S, S).
        geometry: how the film was padded and resized onto the model's square input.
        tokens: the stem tokens entering the last block (1, L, C).
        tail: the per-request tower tail (last block to finding logits) for these findings' directions.
        zero_shot: (F,) zero-shot probabilities, in the order of the text directions.
        unit_embedding: the unit image embedding (1, D) the scores were computed from, or None.
    """

    pixels: torch.Tensor
    geometry: Geometry
    tokens: torch.Tensor
    tail: TowerTail
    zero_shot: torch.Tensor
    unit_embedding: torch.Tensor | None = None

    def embedding(self) -> torch.Tensor:
        """The unit image embedding (1, D): the scoring pass's, else from the stored tokens (no stem pass)."""
        if self.unit_embedding is not None:
            return self.unit_embedding
        with torch.inference_mode():
            return self.tail.embed(self.tokens)


def score_image(encoder: Encoder, image: Image.Image, directions: TextDirections) -> ScoredImage:
    """Preprocess ``image`` (RGB), run the stem once (`meddx.model.tower.run_stem`: the runtime stem when one
    is attached) and the tail for each finding's zero-shot score."""
    pixels, geometry = encoder.preprocess(image)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)
    with torch.inference_mode():
        tokens = run_stem(encoder, pixels[None])
        embedding = tail.embed(tokens)  # tail(tokens) in two steps: the embedding is kept for later use
        logits = zero_shot_logits(embedding, tail.difference, tail.logit_scale, tail.bias)
        probabilities = zero_shot_probabilities(logits)[0]
    return ScoredImage(pixels, geometry, tokens.clone(), tail, probabilities.clone(), embedding.clone())
