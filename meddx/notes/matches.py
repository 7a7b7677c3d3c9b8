"""Phrases found in a note: cleaning that keeps offsets, matching against the lexicon, longest match wins."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from meddx.notes.lexicon import Cue, Definition, Lexicon, phrase_key

_CLEAN = {c: " " for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]}
_CLEAN.update({0x0D: " ", 0x2028: "\n", 0x2029: "\n", 0x200B: " ", 0xFEFF: " ", 0x00A0: " "})
_CLEAN.update({c: "'" for c in (0x2018, 0x2019, 0x02BC)})
_CLEAN.update({c: "-" for c in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2212)})
_CLEAN_TABLE = str.maketrans(_CLEAN)
_LONE_CR = re.compile(r"\r(?!\n)")


@dataclass(frozen=True)
class Part:
    """One concept in a match (a match can carry two: "58M" is an age and a sex)."""

    definition: Definition
    start: int
    end: int
    value: float | None = None
    diastolic: float | None = None


@dataclass(frozen=True)
class Match:
    """A span of the note that stands for concepts, a cue, or nothing (an ignored phrase)."""

    start: int
    end: int
    parts: tuple[Part, ...] = ()
    cue: Cue | None = None
    fixed: str | None = None
    anchor: bool = False
    immune: bool = False  # values: status is present unless a family cue covers them


def clean(text: str) -> tuple[str, str]:
    """The text and its lower case, both as long as ``text`` so that offsets carry over.

    Control characters become spaces (a lone CR a new line), typographic quotes and dashes ASCII ones.
    """
    cleaned = _LONE_CR.sub("\n", text).translate(_CLEAN_TABLE)
    lowered = cleaned.lower()
    if len(lowered) != len(cleaned):  # a few characters lower-case to two; keep those as they are
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in cleaned)
    return cleaned, lowered


def phrase_matches(low: str, lex: Lexicon) -> Iterator[Match]:
    found = ((m.span(1), lex.meanings[phrase_key(m.group(1))]) for m in lex.regex.finditer(low))
    patterned = (
        (m.span(), meaning)
        for pattern, meaning, requires in lex.patterns
        if not requires or any(r in low for r in requires)
        for m in pattern.finditer(low)
    )
    for (start, end), meaning in itertools.chain(found, patterned):
        parts = tuple(Part(d, start, end) for d in meaning.definitions)
        yield Match(start, end, parts, meaning.cue, meaning.fixed, meaning.anchor)


def longest_first(matches: Iterable[Match], size: int) -> list[Match]:
    """Keep the longest matches; anything overlapping a kept match is dropped. Sorted by position."""
    taken = bytearray(size)
    kept = []
    for match in sorted(matches, key=lambda m: (m.start - m.end, m.start)):
        if match.end > match.start and not any(taken[match.start : match.end]):
            taken[match.start : match.end] = b"\x01" * (match.end - match.start)
            kept.append(match)
    kept.sort(key=lambda m: m.start)
    return kept
