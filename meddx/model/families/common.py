"""What the family modules share: assigning a checkpoint to a model built with empty parameters."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from meddx.errors import ModelError
from meddx.model.spec import ResolvedModel, one_line
from meddx.model.weights import read_checkpoint

OPTIONAL_BUFFERS = ("position_ids",)
"""Keys older libraries saved as buffers and newer models no longer hold: dropped when unexpected."""


def assign_checkpoint(model: torch.nn.Module, path: Path, *, unread: Callable[[str], bool]) -> None:
    """Make the checkpoint's tensors the model's parameters, all but those ``unread`` accepts, which are
    left on the meta device (read by their first forward: `meddx.model.weights`).

    The checkpoint must hold exactly the model's keys (buffers of older versions aside).
    """
    state, skipped = read_checkpoint(path, keep=lambda key: not unread(key))
    expected = set(model.state_dict())
    for key in [k for k in state if k not in expected and k.endswith(OPTIONAL_BUFFERS)]:
        del state[key]
    skipped = [k for k in skipped if k in expected or not k.endswith(OPTIONAL_BUFFERS)]
    stored = set(state) | set(skipped)
    if stored != expected:
        missing, unexpected = sorted(expected - stored), sorted(stored - expected)
        raise RuntimeError(
            f"the checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.load_state_dict(state, strict=False, assign=True)


def build_failed(resolved: ResolvedModel, exc: Exception) -> ModelError:
    """The user's message for a model that cannot be built from its files."""
    return ModelError(
        f"{resolved.spec} could not be built from its files ({type(exc).__name__}: {one_line(exc)}). "
        "The weights may be damaged or not match the config: download the model again."
    )


class _RandomInitWarning(logging.Filter):
    """Drops open_clip's "initialized randomly" warnings: the checkpoint is assigned right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "initialized randomly" not in message and "no CLIP weights found" not in message


@contextlib.contextmanager
def quiet_random_init_warning() -> Iterator[None]:
    root, quiet = logging.getLogger(), _RandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def text_lengths(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Each row's length up to its last non-padding token (N,)."""
    used = tokens != pad_id
    positions = torch.arange(1, tokens.shape[1] + 1).expand_as(tokens)
    return (positions * used).amax(dim=1)
