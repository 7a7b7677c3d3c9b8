"""Mixed precision for the scoring pass on a GPU, kept only where it gives fp32's scores.

At warm-up on a CUDA device (`meddx.device.use_autocast`), the scoring pass (stem and tail) is run on the
fixed generated films the ONNX stem is gated on (`meddx.model.stem.gate_films`) in fp32 and under autocast;
the first of bf16 and fp16 whose every finding's score is within `meddx.device.AUTOCAST_MAX_DELTA` of fp32 is
kept on the encoder (`meddx.model.encoder.Encoder.autocast`), else none. Maps always run in fp32 on the
scoring pass's tokens (cast back to fp32): gradients through a half-precision tower are not what the
faithfulness check measured.
"""

from __future__ import annotations

import logging

import torch

from meddx.device import autocast_dtype, use_autocast
from meddx.model.encoder import Encoder
from meddx.model.stem import gate_films
from meddx.model.tower import TowerTail, stem
from meddx.model.zero_shot import TextDirections, zero_shot_probabilities

log = logging.getLogger(__name__)


def gate_autocast(encoder: Encoder, directions: TextDirections) -> torch.dtype | None:
    """Measure and set ``encoder.autocast`` (None on the CPU, or where no dtype agrees with fp32)."""
    encoder.autocast = None
    if not use_autocast(encoder.device):
        return None
    tail = TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)

    def score(pixels: torch.Tensor) -> torch.Tensor:
        return zero_shot_probabilities(tail(stem(encoder, pixels)))

    films = list(gate_films(encoder))
    encoder.autocast = autocast_dtype(score, films, encoder.device)
    log.info("scoring pass precision on %s: %s", encoder.device, encoder.autocast or "fp32")
    return encoder.autocast
