"""The data files (``*.yaml``: the finding vocabulary, note concepts and cues, evidence weights), and the one
loader that reads and checks them.

`load` parses a file of this package once; `DataFile` walks it with typed accessors that name the file and
the key path of any bad value (``findings.yaml: findings[3].threshold: expected a number in [0, 1], got
'high'``), so a broken edit stops meddx at start-up with a message that says where to look.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from meddx.errors import DataFileError


@cache
def _parsed(name: str) -> Any:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataFileError(f"{name}: not valid YAML ({exc})") from exc


@dataclass(frozen=True)
class DataFile:
    """A value inside a data file, with where it sits (``file`` and the key ``path``) for messages."""

    value: Any
    file: str
    path: str = ""

    def _where(self) -> str:
        return f"{self.file}: {self.path}" if self.path else self.file

    def fail(self, expected: str) -> DataFileError:
        """The error for a value that is not what ``expected`` says."""
        return DataFileError(f"{self._where()}: expected {expected}, got {self.value!r}")

    def __getitem__(self, key: str) -> DataFile:
        """The value at ``key`` of this mapping; a missing key is an error that names it."""
        mapping = self.mapping()
        if key not in mapping:
            raise DataFileError(f"{self._where() or self.file}: missing key {key!r}")
        return DataFile(mapping[key], self.file, f"{self.path}.{key}" if self.path else key)

    def get(self, key: str, default: Any = None) -> DataFile:
        """The value at ``key``, or ``default`` (checked like any value) when the key is absent."""
        mapping = self.mapping()
        return DataFile(mapping.get(key, default), self.file, f"{self.path}.{key}" if self.path else key)

    def mapping(self) -> dict:
        if not isinstance(self.value, dict):
            raise self.fail("a mapping")
        return self.value

    def items(self) -> Iterator[DataFile]:
        """Each element of this list, with its index in the path."""
        if not isinstance(self.value, list):
            raise self.fail("a list")
        for i, item in enumerate(self.value):
            yield DataFile(item, self.file, f"{self.path}[{i}]")

    def text(self) -> str:
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.fail("non-empty text")
        return self.value

    def texts(self) -> tuple[str, ...]:
        """A list of non-empty strings (an empty list is allowed)."""
        return tuple(item.text() for item in self.items())

    def number(self, *, low: float | None = None, high: float | None = None) -> float:
        """A number, within [low, high] when given."""
        value = self.value
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" in [{low:g}, {high:g}]" if low is not None and high is not None else ""
            raise self.fail(f"a number{bounds}")
        return float(value)


def load(name: str) -> DataFile:
    """The parsed data file ``name`` (e.g. ``"findings.yaml"``), read once per process."""
    return DataFile(_parsed(name), name)
