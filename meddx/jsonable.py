"""Dataclasses as JSON-safe dicts: `dataclasses.asdict`, with tuples written as lists."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


def _with_lists(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in items}


def as_json_dict(instance: Any) -> dict[str, Any]:
    """Every field of a dataclass instance (nested ones too), tuples as lists, ready for `json.dumps`."""
    return asdict(instance, dict_factory=_with_lists)
