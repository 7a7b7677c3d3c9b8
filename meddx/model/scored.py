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

    The tensors the maps reuse (pixels, tokens) are on the model's device, in fp32; the scores and the
    embedding are on the host.

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
            return self.tail.embed(self.tokens).float().cpu()


def scoring_pass(
    encoder: Encoder, pixels: torch.Tensor, tail: TowerTail
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preprocessed pixels (N, 3, S, S) on the model's device to (stem tokens (N, L, C) in fp32, unit
    embeddings (N, D), zero-shot probabilities (N, F)), all still on that device: the stem once
    (`meddx.model.tower.run_stem`: the runtime stem when one is attached) and the tail, in the model's
    scoring precision (`meddx.model.encoder.Encoder.precision`)."""
    with torch.inference_mode(), encoder.precision():
        tokens = run_stem(encoder, pixels)
        embedding = tail.embed(tokens)  # tail(tokens) in two steps: the embedding is kept for later use
        logits = zero_shot_logits(embedding, tail.difference, tail.logit_scale, tail.bias)
        probabilities = zero_shot_probabilities(logits.float())
    return tokens.float().clone(), embedding.float(), probabilities  # the maps run in fp32


def score_images(
    encoder: Encoder, images: list[Image.Image], directions: TextDirections
) -> list[ScoredImage]:
    """Preprocess each image (RGB) and run one `scoring_pass` for all of them on the model's device (a
    batch: what `meddx.batch` actors do with ``--batch-size`` films); each film gets its own
    `ScoredImage` with its own tail, the scores and embedding on the host, pixels and tokens for the maps.
    """
    prepared = [encoder.preprocess(image) for image in images]
    pixels = torch.stack([p for p, _ in prepared]).to(encoder.device)

    def tail() -> TowerTail:
        return TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)

    tokens, embedding, probabilities = scoring_pass(encoder, pixels, tail())
    return [
        ScoredImage(
            pixels[n],
            geometry,
            tokens[n : n + 1].clone(),
            tail(),
            probabilities[n].cpu().clone(),
            embedding[n : n + 1].cpu().clone(),
        )
        for n, (_, geometry) in enumerate(prepared)
    ]


def score_image(encoder: Encoder, image: Image.Image, directions: TextDirections) -> ScoredImage:
    """`score_images` for one film."""
    return score_images(encoder, [image], directions)[0]
