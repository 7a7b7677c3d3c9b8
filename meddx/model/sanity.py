"""Does the image look like a chest radiograph to the encoder itself? A warning, never a refusal.

The check is a zero-shot finding like any other (`meddx.model.zero_shot`): "a chest radiograph" prompts
against other kinds of image ("a photograph", "a CT scan", "random noise"...), from ``data/sanity.yaml``,
scored on the unit image embedding the scoring pass already made, so it costs one dot product (and, once
per model, the text tower for its prompts, cached like the findings'). Below the file's ``threshold`` the
analysis gets a warning.

Its accuracy is **not measured**: no real BiomedCLIP weights were at hand when it was written, and with
random or tiny weights it is noise. The threshold is a default, not an operating point, and the warning
says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from meddx.data import load
from meddx.model.encoder import Encoder
from meddx.model.vocabulary import Finding
from meddx.model.zero_shot import text_directions, zero_shot_probabilities

CHECK_ID = "chest_xray_check"


@dataclass(frozen=True)
class ChestXrayCheck:
    """The check's prompts (as a `Finding`, so that they are ensembled and cached like one) and threshold."""

    prompts: Finding
    threshold: float


@cache
def chest_xray_check() -> ChestXrayCheck:
    """The check as ``data/sanity.yaml`` defines it (read once).

    Raises:
        DataFileError: a value in the file is missing or of the wrong kind.
    """
    spec = load("sanity.yaml")["chest_xray"]
    templates = spec["templates"].texts()
    prompts = Finding(
        id=CHECK_ID,
        name="Chest radiograph",
        synonyms=(),
        positive=spec["positive"].texts(),
        negative=spec["negative"].texts(),
        threshold=spec["threshold"].number(low=0.0, high=1.0),
        follow_up="",
        templates_positive=templates,
        templates_negative=templates,
    )
    return ChestXrayCheck(prompts, prompts.threshold)


def chest_xray_probability(
    encoder: Encoder,
    embedding: torch.Tensor,
    *,
    cache_dir: Path | None = None,
    check: ChestXrayCheck | None = None,
) -> float:
    """The encoder's probability that the image is a chest radiograph rather than another kind of image.

    Args:
        encoder: the loaded encoder.
        embedding: the film's unit image embedding (1, D) (`meddx.model.scored.ScoredImage.embedding`).
        cache_dir: where text directions are cached on disk (as for the findings).
        check: the prompts and threshold; default ``data/sanity.yaml``'s.
    """
    check = check or chest_xray_check()
    directions = text_directions(encoder, [check.prompts], cache_dir=cache_dir)
    with torch.inference_mode():
        logits = directions.logits(embedding.to(directions.difference.dtype))
    return float(zero_shot_probabilities(logits)[0, 0])


def chest_xray_warnings(probability: float, check: ChestXrayCheck | None = None) -> list[str]:
    """The warning when ``probability`` is below the check's threshold, else none."""
    check = check or chest_xray_check()
    if probability >= check.threshold:
        return []
    return [
        f"The model's own image-text check rates this image as unlike a chest radiograph ({probability:.2f}, "
        f"below {check.threshold:g}): check that this is a chest X-ray. That check's accuracy has not been "
        "measured."
    ]
