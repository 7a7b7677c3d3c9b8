"""One module per model family, each with ``build(resolved) -> Encoder`` (the shape of open_clip's factory and
transformers' ``Auto*`` classes: read the repo's files, return the same kind of object whatever the family).

The family is found from the files by `meddx.model.spec.detect_family`; nothing outside ``meddx.model``
(and the map code) knows which one it holds.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

FAMILIES = {
    "open_clip_hf": "open_clip_hf",
    "open_clip": "open_clip_native",
    "siglip": "siglip",
    "clip": "clip",
}
"""Family name (`meddx.model.spec.detect_family`) -> its module in this package."""

DESCRIPTIONS = {
    "open_clip_hf": "open_clip with a Hugging Face text tower",
    "open_clip": "open_clip with its own text transformer",
    "siglip": "transformers SigLIP",
    "clip": "transformers CLIP",
}


def family_module(family: str) -> ModuleType:
    """The module that builds ``family``'s models."""
    return import_module(f"{__name__}.{FAMILIES[family]}")
