"""Everything `meddx.batch` uses from the rest of meddx, imported here and nowhere else in the package.

When modules move, re-point these imports; the batch code itself names only this module. The scoring chain
is imported lazily (`analysis_chain`) so that the driver process, which only lists films and writes
Parquet, never imports torch or open_clip.
"""

from __future__ import annotations

from meddx import __version__
from meddx.config import Limits as ImagingLimits
from meddx.config import Settings
from meddx.device import parse_device
from meddx.errors import InputError, MeddxError
from meddx.io import Study, load_study
from meddx.io.sniff import IMAGE_SUFFIXES
from meddx.model.vocabulary import Finding, load_vocabulary, parse_labels
from meddx.train.datasets import HF_PREFIX, PATH_COLUMNS
from meddx.train.datasets import _parse_hub_spec as parse_hub_spec
from meddx.train.datasets import _read_csv as read_csv

__all__ = [
    "HF_PREFIX",
    "IMAGE_SUFFIXES",
    "PATH_COLUMNS",
    "Finding",
    "ImagingLimits",
    "InputError",
    "MeddxError",
    "Settings",
    "Study",
    "__version__",
    "analysis_chain",
    "imaging_limits",
    "load_study",
    "load_vocabulary",
    "parse_device",
    "parse_hub_spec",
    "parse_labels",
    "read_csv",
]


def imaging_limits(settings: Settings) -> ImagingLimits:
    """The limits `meddx.pipeline.analyze` reads a film with, from the same settings."""
    return settings.limits


def analysis_chain():
    """``(analyze, warm_up, score_studies)`` from `meddx.pipeline`: one film through the whole chain, the
    start-up, and one scoring pass for several films at once."""
    from meddx.pipeline import analyze, score_studies, warm_up

    return analyze, warm_up, score_studies


def embedding_step():
    """What ``train``'s and ``eval``'s embedding step uses, from `meddx.train.embedding_cache`,
    `meddx.train.datasets`, `meddx.model.encoder` and `meddx.model.head`: ``(load_data, EmbeddingCache,
    content_digest, embed_sources, load_encoder, model_identity)``; ``model_identity(spec)`` is the
    cache's key for a model without loading its weights."""
    from types import SimpleNamespace

    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.spec import resolve
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache, content_digest, embed_sources

    def model_identity(spec: str):
        resolved = resolve(spec)  # what `encoder_identity` reads: the files and the revision, not weights
        return encoder_identity(SimpleNamespace(resolved=resolved, revision=resolved.revision))

    return load_data, EmbeddingCache, content_digest, embed_sources, load_encoder, model_identity


def check_options(settings: Settings, *, method: str | None, mode: str | None) -> None:
    """Refuse, before Ray starts, what every film would fail on: an unknown method or mode, a model or
    trained head that cannot be found (`meddx.model.spec.resolve`, `meddx.model.head_store.load_head`; no
    weights loaded).

    Raises:
        InputError: an unknown method or mode.
        ModelError: the model's files or the head cannot be found (the message says how to fix it).
    """
    from meddx.model.spec import resolve

    if method is not None or mode is not None:
        from meddx.explain.methods import METHOD_NAMES as METHODS
        from meddx.model.modes import MODES

        if method is not None and method not in METHODS:
            raise InputError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")
        if mode is not None and mode not in MODES:
            raise InputError(f"Unknown scoring mode {mode!r}; choose one of: {', '.join(MODES)}.")
    resolve(settings.model)
    if settings.probe:
        from meddx.model.head_store import load_head

        load_head(settings.probe)
