"""Clinical notes -> concepts with a status, a span and the findings they bear on.

A small rule-based engine in the style of ConText (Harkema et al., J Biomed Inform 2009), in pure Python:

1. the text is cleaned without moving any character (control characters become spaces, curly quotes and
   dashes plain ones), lower-cased, and split into clauses (sentence ends, ";", new lines that start a new
   item; "Dr.", "e.g." and decimals do not end a sentence);
2. one precompiled regular expression, built as a character trie over every phrase in the vocabularies
   (finding synonyms from ``findings.yaml``, concepts, fixed-status phrases, anchors and ignored phrases
   from ``note_concepts.yaml``, cues from ``context_cues.yaml``), finds every phrase that starts at every
   word; a few patterns read values (age, sex letter, temperature, SpO2, pack-years). Overlaps are
   resolved by length: the longest match wins and anything it overlaps is dropped;
3. each concept gets its status from the cues in its clause (see ``context_cues.yaml`` for the scope
   rules).

Note text is never logged.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

import yaml

from meddx.errors import InputError
from meddx.jsonable import as_json_dict
from meddx.model.vocabulary import load_vocabulary

MAX_CHARS = 20_000
STATUSES = ("present", "absent", "uncertain", "historical", "family")
FINDING_PRECEDENCE = ("present", "uncertain", "historical", "absent")
"""How `finding_statuses` picks one status from several mentions: the first that occurs wins."""

_CUE_STATUS = {
    "negation": "absent",
    "uncertainty": "uncertain",
    "historical": "historical",
    "family": "family",
}
_CHAIN_PRECEDENCE = ("family", "negation", "uncertainty", "historical")
_REACH = 300  # characters: the farthest any cue acts, however long the clause

_ALNUM = r"[^\W_]"
_EDGE = rf"(?:(?<!{_ALNUM})|(?!{_ALNUM}))"  # not in the middle of a word
_SEP = r"(?:\s++|\s*+-\s*+)"  # possessive: no backtracking over long runs of spaces
_SEP_KEY = "\x00"
_SEP_RE = re.compile(_SEP)
_WORD_RE = re.compile(rf"{_ALNUM}+")
_BREAK_RE = re.compile(r"[.!?](?=\s|$)|;|\n")
_NEXT_RE = re.compile(r"[ \t]*(\S)")
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "vs", "eg", "ie", "approx", "pt", "yo", "fig", "sr", "jr", "cf"}
    | {"resp", "temp", "sat", "sats", "hr", "bp", "rr"}
)

_CLEAN = {c: " " for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]}
_CLEAN.update({0x0D: " ", 0x2028: "\n", 0x2029: "\n", 0x200B: " ", 0xFEFF: " ", 0x00A0: " "})
_CLEAN.update({c: "'" for c in (0x2018, 0x2019, 0x02BC)})
_CLEAN.update({c: "-" for c in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2212)})
_CLEAN_TABLE = str.maketrans(_CLEAN)
_LONE_CR = re.compile(r"\r(?!\n)")

_NUM = r"(\d{1,3}(?:\.\d{1,2})?)"
_AGE_RE = re.compile(
    r"(?<![\w.])(\d{1,3})\s*+-?\s*+(?:years?|yrs?|yr)\s*+-?\s*+old(?![^\W_])"
    r"|(?<![\w.])(\d{1,3})\s*+-?\s*+(?:yo|y/o|y\.o\.?)(?:\s*+([mf])(?![^\W_]))?(?![^\W_])"
    r"|(?<![^\W_])(?:aged?|age:)\s*+(\d{1,3})(?![\w.])"
)
_AGE_SEX_RE = re.compile(  # "58M"; not "28F chest drain"
    r"(?<![\w.])(\d{1,2})\s?([mf])(?![^\W_])"
    r"(?!\s*+(?:fr|french|chest|drain|catheter|tube|sheath|pigtail|cannula|ng))"
)
_UNIT = r"(celsius|fahrenheit|c|f)"
_DEGREE = r"(?:[°º˚]|deg(?:rees?)?\.?)"
_TEMP_RE = re.compile(  # possessive \s*+ everywhere: a long run of spaces must not backtrack
    r"(?<![^\W_'])(?:temperature|temp|tmax|t|febrile|pyrexial|fevers?)"
    r"\s*+(?:[:=]\s*+)?(?:(?:of|was|is|at|to|with)\s++)?"
    + _NUM
    + rf"(?:\s*+{_DEGREE})?(?:\s*+{_UNIT})?(?![^\W_])"
    + r"|(?<![\w.])"
    + _NUM
    + rf"\s*+(?:[°º˚](?:\s*+{_UNIT})?|deg(?:rees?)?\.?\s*+{_UNIT}|(c|f))(?![^\W_])"
)
_SPO2_RE = re.compile(
    r"(?<![^\W_])(?:spo2|spo₂|sp02|sao2|o2\s*+sats?|o2\s*+saturation|oxygen\s++saturations?|oxygen\s++sats?"
    r"|sats?|saturations?|saturating|pulse\s++ox(?:imetry)?|desaturat(?:ing|ed|ion)\s++to)"
    r"\s*+(?:[:=]\s*+)?(?:of|was|is|at|to)?\s*+"
    + _NUM
    + r"\s*+(?:%|(?=on\s++(?:ra|room\s++air|air)(?![^\W_])))"
)
_PACK_YEARS_RE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:\.\d+)?)\s*+\+?\s*+-?\s*+(?:pack|pk)\s*+-?\s*+(?:years?|yrs?|yr)(?![^\W_])"
    r"(?:\s++(?:smoking\s++)?history(?:\s++of\s++smoking)?)?"
    r"|(?<![\w.])(\d{1,2}(?:\.\d+)?)\s*+(?:ppd|packs?\s++(?:per|a)\s++day)"
    r"\s++(?:for|x)\s*+(\d{1,2})\s*+(?:years?|yrs?)"
)


@dataclass(frozen=True)
class Concept:
    """One concept found in the notes.

    Attributes:
        name: normalised id, e.g. ``"effusion"``, ``"cough"``, ``"smoking"``, ``"age"``.
        display: display name.
        category: ``finding`` | ``symptom`` | ``risk_factor`` | ``history`` | ``demographic`` | ``vital``.
        status: ``present`` | ``absent`` | ``uncertain`` | ``historical`` | ``family``.
        start: offset of the matched span in the original text.
        end: offset just past the span (``text[start:end] == concept.text``).
        text: the matched span as written.
        supports: the image finding ids the concept bears on.
        value: a number read with it: age in years, temperature in °C, SpO2 in %, pack-years.
    """

    name: str
    display: str
    category: str
    status: str
    start: int
    end: int
    text: str
    supports: tuple[str, ...]
    value: float | None = None

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return as_json_dict(self)


@dataclass(frozen=True)
class _Definition:
    name: str
    display: str
    category: str
    supports: tuple[str, ...]


@dataclass(frozen=True)
class _Cue:
    category: str  # negation | uncertainty | historical | family | pseudo | termination
    direction: str  # forward | backward | bidirectional | either
    max_words: int | None = None
    ends: frozenset[str] | None = None  # a termination: the categories whose scope it ends (None: all)


@dataclass(frozen=True)
class _Meaning:
    """What a vocabulary phrase stands for. No definitions and no cue: an ignored phrase."""

    definitions: tuple[_Definition, ...] = ()
    fixed: str | None = None
    anchor: bool = False
    cue: _Cue | None = None


@dataclass(frozen=True)
class _Part:
    definition: _Definition
    start: int
    end: int
    value: float | None = None


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    parts: tuple[_Part, ...] = ()
    cue: _Cue | None = None
    fixed: str | None = None
    anchor: bool = False
    immune: bool = False  # values: status is present unless a family cue covers them


@dataclass(frozen=True)
class _Lexicon:
    regex: re.Pattern[str]
    meanings: dict[str, _Meaning]
    patterns: tuple[tuple[re.Pattern[str], _Meaning], ...]
    definitions: dict[str, _Definition]
    conjunctions: re.Pattern[str]
    breakers: frozenset[str]


def _read_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("meddx.data").joinpath(name).read_text(encoding="utf-8"))


def _phrase(value: object) -> str:
    """A vocabulary phrase as its lookup key; YAML turns a bare ``no`` into False, so insist on text."""
    if not isinstance(value, str):
        raise TypeError(f"vocabulary phrase {value!r} is not text: quote it in the YAML file")
    return _key(value)


def _key(phrase: str) -> str:
    return " ".join(_SEP_RE.sub(" ", phrase.lower().strip()).split())


def _plural(word: str) -> str | None:
    if not word.isalpha() or len(word) < 3:
        return None
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _trie_regex(phrases: Iterable[str]) -> str:
    """One regex alternation for many phrases, as a character trie (fast in `re`; longest match first)."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for char in phrase.replace(" ", _SEP_KEY):
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [
            (_SEP if ch == _SEP_KEY else re.escape(ch)) + build(child)
            for ch, child in sorted(node.items())
            if ch
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


def _concept_meanings(notes: dict) -> tuple[dict[str, _Meaning], dict[str, _Definition]]:
    """Phrase -> meaning for findings, note concepts, fixed-status phrases, anchors and ignored phrases."""
    meanings: dict[str, _Meaning] = {}
    definitions: dict[str, _Definition] = {}

    def add(phrase: str, definition: _Definition) -> None:
        words = _phrase(phrase).split(" ")
        keys = [" ".join(words)]
        if tail := _plural(words[-1]):
            keys.append(" ".join([*words[:-1], tail]))
        for key in keys:
            old = meanings.get(key, _Meaning())
            if definition not in old.definitions:
                meanings[key] = _Meaning(definitions=(*old.definitions, definition))

    for finding in load_vocabulary().findings:
        definitions[finding.id] = _Definition(finding.id, finding.name, "finding", (finding.id,))
        for synonym in finding.synonyms:
            add(synonym, definitions[finding.id])
    finding_keys = set(meanings)
    for item in notes["concepts"]:
        definition = _Definition(item["id"], item["name"], item["category"], tuple(item.get("supports", ())))
        definitions[item["id"]] = definition
        for synonym in item.get("synonyms", ()):
            key = _phrase(synonym)
            if key in finding_keys:  # a note concept wins over a finding synonym spelled the same
                del meanings[key]
                finding_keys.discard(key)
            add(synonym, definition)
    for group in notes.get("fixed_status", ()):
        for phrase in group["phrases"]:
            meanings[_phrase(phrase)] = _Meaning((definitions[group["concept"]],), fixed=group["status"])
    for group in notes.get("anchors", ()):
        anchored = tuple(definitions[f] for f in group["findings"])
        for phrase in group["phrases"]:
            meanings.setdefault(_phrase(phrase), _Meaning(anchored, anchor=True))
    for phrase in notes.get("ignore", ()):
        meanings[_phrase(phrase)] = _Meaning()
    return meanings, definitions


def _cue_meanings(cues: dict) -> dict[str, _Meaning]:
    """Phrase -> meaning for ConText cues, neutral phrases and terminations."""
    meanings: dict[str, _Meaning] = {}
    for category in ("negation", "uncertainty", "historical", "family", "pseudo"):
        for direction, items in cues[category].items():
            for item in items:
                phrase, max_words = (
                    (item["phrase"], item.get("max_words")) if isinstance(item, dict) else (item, None)
                )
                meanings[_phrase(phrase)] = _Meaning(cue=_Cue(category, direction, max_words))
    for phrase in cues.get("neutral", ()):
        meanings[_phrase(phrase)] = _Meaning()
    for phrase in cues["termination"]:
        meanings[_phrase(phrase)] = _Meaning(cue=_Cue("termination", "bidirectional"))
    for category, phrases in cues.get("termination_of", {}).items():
        for phrase in phrases:
            meanings[_phrase(phrase)] = _Meaning(
                cue=_Cue("termination", "bidirectional", ends=frozenset({category}))
            )
    return meanings


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    """Load the three vocabularies and compile them into one regex (once per process)."""
    notes, cues = _read_yaml("note_concepts.yaml"), _read_yaml("context_cues.yaml")
    meanings, definitions = _concept_meanings(notes)
    meanings.update(_cue_meanings(cues))  # a cue wins over a concept phrase spelled the same
    patterns = tuple(
        (re.compile(p["regex"]), _Meaning(cue=_Cue(p["category"], p["direction"], p.get("max_words"))))
        for p in cues.get("patterns", ())
    ) + tuple(
        (re.compile(p["regex"]), _Meaning((definitions[p["concept"]],))) for p in notes.get("patterns", ())
    )
    rules = cues["list_rules"]
    conjunctions = "|".join(re.escape(c) for c in rules["conjunctions"])
    return _Lexicon(
        regex=re.compile(f"(?=({_EDGE}{_trie_regex(meanings)}{_EDGE}))"),
        meanings=meanings,
        patterns=patterns,
        definitions=definitions,
        conjunctions=re.compile(rf"(?<!{_ALNUM})(?:{conjunctions})(?!{_ALNUM})"),
        breakers=frozenset(rules["breakers"]),
    )


def _clean(text: str) -> tuple[str, str]:
    """The text and its lower case, both as long as ``text`` so that offsets carry over.

    Control characters become spaces (a lone CR a new line), typographic quotes and dashes ASCII ones.
    """
    cleaned = _LONE_CR.sub("\n", text).translate(_CLEAN_TABLE)
    lowered = cleaned.lower()
    if len(lowered) != len(cleaned):  # a few characters lower-case to two; keep those as they are
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in cleaned)
    return cleaned, lowered


def _clauses(cleaned: str, low: str) -> list[tuple[int, int]]:
    """Clause spans: sentence ends (not after abbreviations or initials), ";" and item-starting new lines.

    A full stop or new line followed by a lower-case letter continues the sentence (wrapped lines).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BREAK_RE.finditer(low):
        pos = m.start()
        char = low[pos]
        following = _NEXT_RE.match(cleaned, m.end())
        nxt = following.group(1) if following else ""
        if char == ".":
            words = low[max(start, pos - 12) : pos].split()
            word = words[-1].lstrip("(").replace(".", "") if words else ""
            if (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS or nxt.islower():
                continue
        elif char == "\n" and nxt.islower():
            continue
        spans.append((start, pos + 1))
        start = pos + 1
    if start < len(low):
        spans.append((start, len(low)))
    return spans


def _value_matches(text: str, low: str, lex: _Lexicon) -> Iterator[_Match]:
    d = lex.definitions
    for m in _AGE_RE.finditer(low):
        age = int(m.group(1) or m.group(2) or m.group(4))
        if not 0 < age <= 120:
            continue
        parts = [_Part(d["age"], m.start(), m.end(), float(age))]
        if m.group(3):
            sex = d["male"] if m.group(3) == "m" else d["female"]
            parts = [_Part(d["age"], m.start(), m.start(3), float(age)), _Part(sex, m.start(3), m.end(3))]
        yield _Match(m.start(), m.end(), tuple(parts), immune=True)
    for m in _AGE_SEX_RE.finditer(low):
        if text[m.start(2)] in "MF" and int(m.group(1)) > 0:
            sex = d["male"] if m.group(2) == "m" else d["female"]
            parts = (
                _Part(d["age"], m.start(1), m.end(1), float(m.group(1))),
                _Part(sex, m.start(2), m.end(2)),
            )
            yield _Match(m.start(), m.end(), parts, immune=True)
    for m in _TEMP_RE.finditer(low):
        raw = m.group(1) or m.group(3)
        unit = next((u for u in m.group(2, 4, 5, 6) if u), "")[:1]
        celsius = _celsius(float(raw), unit)
        if celsius is None:
            continue
        parts = [_Part(d["temperature"], m.start(), m.end(), celsius)]
        if celsius >= 38.0:
            parts.append(_Part(d["fever"], m.start(), m.end(), celsius))
        yield _Match(m.start(), m.end(), tuple(parts), immune=True)
    for m in _SPO2_RE.finditer(low):
        value = float(m.group(1))
        if 50 <= value <= 100:
            yield _Match(m.start(), m.end(), (_Part(d["spo2"], m.start(), m.end(), value),), immune=True)
    for m in _PACK_YEARS_RE.finditer(low):
        value = float(m.group(1)) if m.group(1) else float(m.group(2)) * float(m.group(3))
        part = _Part(d["smoking"], m.start(), m.end(), value)
        yield _Match(m.start(), m.end(), (part,), fixed=None if value > 0 else "absent")


def _celsius(value: float, unit: str) -> float | None:
    """°C from a reading in °C or °F (unit ``c``, ``f`` or unknown); None when implausible."""
    if unit != "f" and 30.0 <= value <= 45.0:
        return value
    if unit != "c" and 86.0 <= value <= 113.0:
        return round((value - 32.0) * 5.0 / 9.0, 1)
    return None


def _phrase_matches(low: str, lex: _Lexicon) -> Iterator[_Match]:
    found = ((m.span(1), lex.meanings[_key(m.group(1))]) for m in lex.regex.finditer(low))
    patterned = ((m.span(), meaning) for pattern, meaning in lex.patterns for m in pattern.finditer(low))
    for (start, end), meaning in itertools.chain(found, patterned):
        parts = tuple(_Part(d, start, end) for d in meaning.definitions)
        yield _Match(start, end, parts, meaning.cue, meaning.fixed, meaning.anchor)


def _longest_first(matches: Iterable[_Match], size: int) -> list[_Match]:
    """Keep the longest matches; anything overlapping a kept match is dropped. Sorted by position."""
    taken = bytearray(size)
    kept = []
    for match in sorted(matches, key=lambda m: (m.start - m.end, m.start)):
        if match.end > match.start and not any(taken[match.start : match.end]):
            taken[match.start : match.end] = b"\x01" * (match.end - match.start)
            kept.append(match)
    kept.sort(key=lambda m: m.start)
    return kept


class _Clause:
    """The cues and concepts of one clause, and the ConText scope rules over them.

    Matches are sorted by position and never overlap, so "is there one between a and b" is a bisection.
    No cue reaches farther than `_REACH` characters, which keeps a pathological clause (thousands of
    comma-separated items) linear.
    """

    def __init__(self, low: str, end: int, matches: list[_Match], lex: _Lexicon) -> None:
        self.low = low
        self.end = end
        self.lex = lex
        self.cues = [m for m in matches if m.cue and m.cue.category != "termination"]
        self.terminations = [m for m in matches if m.cue and m.cue.category == "termination"]
        self.concepts = [m for m in matches if m.parts]
        self._cue_starts = [m.start for m in self.cues]
        self._termination_starts = [m.start for m in self.terminations]
        self._concept_starts = [m.start for m in self.concepts]
        self._acts_forward: dict[int, bool] = {}

    @staticmethod
    def _any_between(starts: list[int], items: list[_Match], a: int, b: int) -> bool:
        i = bisect.bisect_left(starts, a)
        return i < len(items) and items[i].end <= b

    def _terminated(self, a: int, b: int, category: str) -> bool:
        """Whether a termination that ends ``category``'s scope lies within low[a:b]."""
        i = bisect.bisect_left(self._termination_starts, a)
        for termination in itertools.takewhile(lambda t: t.end <= b, self.terminations[i:]):
            if termination.cue.ends is None or category in termination.cue.ends:
                return True
        return False

    def _blocked(self, a: int, b: int, cue: _Cue, forward: bool) -> bool:
        """Whether the gap low[a:b] between a cue and a concept stops the cue's scope."""
        if b - a > _REACH or self._terminated(a, b, cue.category):
            return True
        gap = self.low[a:b]
        if cue.max_words is not None and len(_WORD_RE.findall(gap)) > cue.max_words:
            return True
        comma = gap.find(",")
        if comma < 0 or (forward and gap.lstrip().startswith(":")):
            return False
        rest = self.low[a + comma : min(self.end, b + _REACH)] if forward else gap[comma:]
        if not self.lex.conjunctions.search(rest):
            return True
        if forward:
            for piece in gap.split(",")[1:]:
                words = _WORD_RE.findall(piece)
                if words and words[0] in self.lex.breakers:
                    return True
        return False

    def _forward_covers(self, cue: _Match, target: _Match) -> bool:
        return cue.end <= target.start and not self._blocked(cue.end, target.start, cue.cue, True)

    def _backward_covers(self, cue: _Match, target: _Match) -> bool:
        if target.end > cue.start or self._blocked(target.end, cue.start, cue.cue, False):
            return False
        if cue.cue.direction == "either":  # backward only when nothing follows it in scope
            return not self._acts_forward_on_something(cue)
        return True

    def _acts_forward_on_something(self, cue: _Match) -> bool:
        if cue.start not in self._acts_forward:
            i = bisect.bisect_left(self._concept_starts, cue.end)
            following = itertools.takewhile(lambda c: c.start - cue.end <= _REACH, self.concepts[i:])
            self._acts_forward[cue.start] = any(self._forward_covers(cue, c) for c in following)
        return self._acts_forward[cue.start]

    def _chain(self, covering: list[_Match], forward: bool) -> list[_Cue]:
        """The nearest covering cue, plus farther ones adjacent to it (no concept between them).

        ``covering`` is nearest first. A pseudo cue ends the chain and is not part of it.
        """
        chain = covering[:1]
        for cue in covering[1:]:
            left, right = (cue.end, chain[-1].start) if forward else (chain[-1].end, cue.start)
            if self._any_between(self._concept_starts, self.concepts, left, right):
                break
            chain.append(cue)
        cues = [c.cue for c in chain]
        pseudo = next((i for i, c in enumerate(cues) if c.category == "pseudo"), len(cues))
        return cues[:pseudo]

    def status(self, target: _Match) -> str:
        """ConText status of one concept match."""
        lo = bisect.bisect_left(self._cue_starts, target.start - _REACH)
        hi = bisect.bisect_right(self._cue_starts, target.end + _REACH)
        nearby = self.cues[lo:hi]
        before = [
            c
            for c in reversed(nearby)
            if c.cue.direction in ("forward", "bidirectional", "either") and self._forward_covers(c, target)
        ]
        after = [
            c
            for c in nearby
            if c.cue.direction in ("backward", "bidirectional", "either") and self._backward_covers(c, target)
        ]
        forward, backward = self._chain(before, True), self._chain(after, False)
        categories = {c.category for c in forward + backward}
        if target.immune:
            return "family" if "family" in categories else "present"
        if any(_outscopes(chain, "uncertainty", "negation") for chain in (forward, backward)):
            return "uncertain"
        for category in _CHAIN_PRECEDENCE:
            if category in categories:
                return _CUE_STATUS[category]
        return "present"


def _outscopes(chain: list[_Cue], outer: str, inner: str) -> bool:
    """Whether, in a nearest-first chain, an ``outer`` cue stands farther out than an ``inner`` one."""
    names = [c.category for c in chain]
    return outer in names and inner in names and names.index(outer) > names.index(inner)


_SURROGATES = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (never valid text; it cannot be encoded as UTF-8 or JSON) replaced
    by U+FFFD, so that offsets carry over. Pasted or sent notes can hold them (a split emoji)."""
    return _SURROGATES.sub("\ufffd", text)


def extract_concepts(text: str, *, max_chars: int = MAX_CHARS) -> list[Concept]:
    """Find the concepts in clinical notes, each with its ConText status and exact span.

    Args:
        text: free-text notes or a report. HTML is read as plain text; "XXXX" anonymisation tokens are
            unknown words.
        max_chars: longest text accepted.

    Returns:
        Concepts in text order. Anchors ("heart size", "lungs") appear only when called normal, as the
        finding absent; phrases on the ignore list never appear.

    Raises:
        InputError: the text is not a string or is longer than ``max_chars``.
    """
    if not isinstance(text, str):
        raise InputError("Clinical notes must be text.")
    text = without_surrogates(text)
    if len(text) > max_chars:
        raise InputError(
            f"The clinical notes are too long: {len(text):,} characters; at most {max_chars:,} are accepted. "
            "Paste the relevant history and the current report only."
        )
    lex = _lexicon()
    cleaned, low = _clean(text)
    matches = _longest_first([*_phrase_matches(low, lex), *_value_matches(text, low, lex)], len(low))
    concepts: list[Concept] = []
    index = 0
    for start, end in _clauses(cleaned, low):
        inside = []
        while index < len(matches) and matches[index].start < end:
            if matches[index].start >= start:
                inside.append(matches[index])
            index += 1
        clause = _Clause(low, end, inside, lex)
        for match in clause.concepts:
            status = match.fixed or clause.status(match)
            if match.anchor and status != "absent":
                continue
            concepts.extend(
                Concept(
                    name=p.definition.name,
                    display=p.definition.display,
                    category=p.definition.category,
                    status=status,
                    start=p.start,
                    end=p.end,
                    text=text[p.start : p.end],
                    supports=p.definition.supports,
                    value=p.value,
                )
                for p in match.parts
            )
    return _settle_pack_years(concepts)


def _settle_pack_years(concepts: list[Concept]) -> list[Concept]:
    """Pack-years say how much, not when: they take "historical" from an ex-smoker mention elsewhere."""
    if not any(c.name == "smoking" and c.status == "historical" for c in concepts):
        return concepts
    return [
        replace(c, status="historical")
        if c.name == "smoking" and c.value is not None and c.status == "present"
        else c
        for c in concepts
    ]


def finding_statuses(concepts: Iterable[Concept]) -> dict[str, str]:
    """One status per image finding mentioned, over all of its mentions.

    Only findings of the image vocabulary (``findings.yaml``) count; family-history mentions are not the
    patient's and are left out. When a finding is mentioned several times, the status that comes first in
    `FINDING_PRECEDENCE` wins: present > uncertain > historical > absent (a finding stated present anywhere
    is present; "absent" needs every mention to be negated).
    """
    rank = {status: i for i, status in enumerate(FINDING_PRECEDENCE)}
    known = {f.id for f in load_vocabulary().findings}
    result: dict[str, str] = {}
    for concept in concepts:
        if concept.category != "finding" or concept.name not in known or concept.status not in rank:
            continue
        current = result.get(concept.name)
        if current is None or rank[concept.status] < rank[current]:
            result[concept.name] = concept.status
    return result


__all__ = ["FINDING_PRECEDENCE", "MAX_CHARS", "STATUSES", "Concept", "extract_concepts", "finding_statuses"]
