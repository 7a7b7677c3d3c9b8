"""Reading an upload's bytes within the limits, and the guards every decoder runs under.

Every failure is an `InputError` whose message is safe to show (a cleaned file name, never file content).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from meddx.config import Limits
from meddx.errors import InputError

_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories dropped from file names in messages: controls, format characters (bidi overrides and
isolates, zero-width characters), lone surrogates, private-use and unassigned code points, line breaks."""


def clean_name(filename: str) -> str:
    """A file's base name as it may be shown: no invisible or reordering characters, at most 80 long."""
    base = Path(filename.replace("\\", "/")).name
    return "".join(ch for ch in base if unicodedata.category(ch) not in _INVISIBLE).strip()[:80]


def file_label(filename: str | None) -> str:
    """'The file' or "The file 'name.png'" with a cleaned, shortened base name (`clean_name`).

    A name such as ``xray<U+202E>gnp.exe`` would otherwise display as ``xrayexe.png``.
    """
    name = clean_name(filename) if filename else ""
    return f"The file '{name}'" if name else "The file"


def read_source(source: bytes | str | os.PathLike | BinaryIO, label: str, limits: Limits) -> bytes:
    """The file's bytes, refusing more than `limits.max_file_bytes`."""
    too_large = InputError(
        f"{label} is larger than {format_bytes(limits.max_file_bytes)}, the most meddx accepts. "
        "Please upload a smaller export of the image."
    )
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
        elif isinstance(source, str | os.PathLike):
            if os.stat(source).st_size > limits.max_file_bytes:
                raise too_large
            data = Path(source).read_bytes()
        else:
            data = source.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise InputError(f"{label} could not be opened. Please upload it again.") from exc
    if len(data) > limits.max_file_bytes:
        raise too_large
    return data


def format_bytes(count: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


@contextmanager
def decode_errors(message: str) -> Iterator[None]:
    """Turn any failure inside the block into an `InputError` with `message` (MemoryError: its own)."""
    try:
        yield
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(
            "The image is too large to process with the memory available. Please upload a smaller export."
        ) from exc
    except Exception as exc:
        raise InputError(message) from exc
    except BaseException as exc:
        # Rust decoders (pylibjpeg-rle) turn a panic on malformed data into pyo3's PanicException,
        # which derives from BaseException; anything else (KeyboardInterrupt, SystemExit) propagates.
        if type(exc).__name__ != "PanicException":
            raise
        raise InputError(message) from exc


def damaged(label: str) -> str:
    return (
        f"{label} is damaged or incomplete, so its image could not be read. "
        "Please export and upload it again."
    )


def check_dimensions(width: int, height: int, label: str, limits: Limits) -> None:
    """Refuse images with too many pixels or a side shorter than `limits.min_side`, from the header."""
    if width * height > limits.max_pixels:
        raise InputError(
            f"{label} is {width}x{height} pixels ({width * height:,} pixels); meddx accepts at most "
            f"{limits.max_pixels:,} pixels. Please upload a downscaled export."
        )
    if min(width, height) < limits.min_side:
        raise InputError(
            f"{label} is only {width}x{height} pixels; meddx needs at least {limits.min_side} pixels "
            "on each side."
        )
