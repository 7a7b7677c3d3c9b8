"""Which device the model runs on: ``MEDDX_DEVICE`` / ``--device`` = ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

- ``auto`` (default): the first CUDA device when PyTorch sees one, else the CPU.
- ``cpu``: the CPU, with the ONNX Runtime stem (`meddx.model.stem`), a CPU optimisation.
- ``cuda`` / ``cuda:N``: that GPU, or a `ModelError` naming what was asked for and what this machine has:
  a device the user named is never replaced by another without a word.

On a CUDA device the whole chain runs there (encoder, text directions, tail, maps, training embeddings,
``batch`` actors, `meddx.model.encoder.load_encoder`); embeddings and scores come back to the host, and the
ONNX Runtime stem is not used (a CPU optimisation). The lung-field model (`meddx.anatomy`, 210k parameters)
stays on the CPU everywhere. Mixed precision is used only
where `autocast_dtype` measured it to agree with fp32 (`AUTOCAST_MAX_DELTA`) on generated films at warm-up,
as the int8 stem is gated; on the CPU it is never used (bf16 autocast ran ~10x slower than fp32 there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from meddx.errors import ModelError

if TYPE_CHECKING:  # torch is imported where it is used: `meddx.config` reads this module without it
    import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
AUTOCAST_MAX_DELTA = 1e-3
"""Largest difference of any finding's score to fp32 accepted from a mixed-precision forward."""
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(raw: str | None) -> str:
    """Check a ``MEDDX_DEVICE`` / ``--device`` value and return it lower-cased (``auto`` when empty)."""
    value = (raw or "").strip().lower() or "auto"
    if not _PATTERN.fullmatch(value):
        raise ValueError(f"MEDDX_DEVICE / --device must be auto, cpu, cuda or cuda:N, got {raw!r}")
    return value


def resolve_device(requested: str = "auto") -> torch.device:
    """The `torch.device` for a checked device string; `ModelError` when a named GPU is not there."""
    import torch

    requested = parse_device(requested)
    available = torch.cuda.is_available()
    if requested == "auto":
        return torch.device("cuda" if available else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if not available:
        raise ModelError(
            f"MEDDX_DEVICE / --device is {requested!r}, but PyTorch sees no CUDA device on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Use --device cpu (or "
            "auto), or run on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
    device = torch.device(requested)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ModelError(
            f"MEDDX_DEVICE / --device is {requested!r}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}). Pick one of those."
        )
    return device


def describe(device: torch.device) -> str:
    """The device in words for the model panel and the report (e.g. "CPU", "CUDA: NVIDIA L4")."""
    import torch

    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return device.type.upper()


def use_autocast(device: torch.device) -> bool:
    """Whether mixed precision is worth gating on this device: on CUDA only."""
    return device.type == "cuda"


def autocast_dtype(
    score: Callable[[torch.Tensor], torch.Tensor],
    films: Sequence[torch.Tensor],
    device: torch.device,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    max_delta: float = AUTOCAST_MAX_DELTA,
) -> torch.dtype | None:
    """The first mixed-precision dtype whose scores agree with fp32 on every film, or None.

    Warm-up calls it on a CUDA device only (`use_autocast`); it runs on any device PyTorch autocasts on.

    Args:
        score: preprocessed pixels (N, 3, S, S) on ``device`` -> per-finding scores (N, F) in [0, 1].
        films: preprocessed generated films (3, S, S), scored together.
        device: where ``score`` runs.
        dtypes: the dtypes to try, in order (default bf16, then fp16).
        max_delta: the largest score difference to fp32 accepted.
    """
    import torch

    if not films:
        return None
    dtypes = (torch.bfloat16, torch.float16) if dtypes is None else dtypes
    pixels = torch.stack(list(films)).to(device)
    with torch.inference_mode():
        reference = score(pixels).float()
        for dtype in dtypes:
            if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                continue
            with torch.autocast(device.type, dtype=dtype):
                delta = float((score(pixels).float() - reference).abs().max())
            if delta <= max_delta:
                log.info("mixed precision %s agrees with fp32 (max score difference %.1e)", dtype, delta)
                return dtype
            log.info("mixed precision %s refused: max score difference %.1e > %.0e", dtype, delta, max_delta)
    return None
