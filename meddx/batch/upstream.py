"""Everything `meddx.batch` uses from the rest of meddx, imported here and nowhere else in the package.

When modules move, re-point these imports; the batch code itself names only this module. The scoring chain
is imported lazily (`analysis_chain`) so that the driver process, which only lists films and writes
Parquet, never imports torch or open_clip.
"""

from __future__ import annotations

from meddx import __version__
from meddx.config import Settings
from meddx.datasets import HF_PREFIX, IMAGE_SUFFIXES, PATH_COLUMNS
from meddx.datasets import _parse_hub_spec as parse_hub_spec
from meddx.errors import InputError, MeddxError
from meddx.imaging import ImagingLimits, Study, load_study
from meddx.vocabulary import Finding, load_vocabulary, parse_labels

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
    "parse_hub_spec",
    "parse_labels",
]


def imaging_limits(settings: Settings) -> ImagingLimits:
    """The limits `meddx.pipeline.analyze` reads a film with, from the same settings."""
    limits = settings.limits
    return ImagingLimits(
        max_file_bytes=limits.max_file_mb * 1024 * 1024,
        max_pixels=limits.max_pixels,
        min_side=limits.min_side,
    )


def analysis_chain():
    """``(analyze, warm_up)`` from `meddx.pipeline`: one film through the whole chain, and the start-up."""
    from meddx.pipeline import analyze, warm_up

    return analyze, warm_up
