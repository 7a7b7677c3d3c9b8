"""Dataclasses as JSON-safe dicts: `dataclasses.asdict`, with tuples written as lists and enums as values."""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value.value if isinstance(value, Enum) else value


def _with_lists(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in items}


def as_json_dict(instance: Any) -> dict[str, Any]:
    """Every field of a dataclass instance (nested ones too), tuples as lists, ready for `json.dumps`."""
    return asdict(instance, dict_factory=_with_lists)
