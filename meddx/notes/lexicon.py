"""The notes vocabulary, compiled: every phrase of the three data files and what it stands for.

``findings.yaml`` (finding synonyms), ``note_concepts.yaml`` (concepts, fixed-status phrases, anchors,
ignored phrases, concept patterns) and ``context_cues.yaml`` (ConText cues, terminations, list rules) become
one `Lexicon`: a phrase -> `Meaning` table and one regular expression, a character trie over every phrase,
that finds them all in one pass."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from meddx.model.vocabulary import load_vocabulary
from meddx.notes.status import Status

ALNUM = r"[^\W_]"
_EDGE = rf"(?:(?<!{ALNUM})|(?!{ALNUM}))"  # not in the middle of a word
_SEP = r"(?:\s++|\s*+-\s*+)"  # possessive: no backtracking over long runs of spaces
_SEP_KEY = "\x00"
_SEP_RE = re.compile(_SEP)
WORD_RE = re.compile(rf"{ALNUM}+")


@dataclass(frozen=True)
class Definition:
    name: str
    display: str
    category: str
    supports: tuple[str, ...]


@dataclass(frozen=True)
class Cue:
    category: str  # negation | uncertainty | historical | family | pseudo | termination
    direction: str  # forward | backward | bidirectional | either
    max_words: int | None = None
    max_words_back: int | None = None  # an "either" cue's reach backward, when it differs
    ends: frozenset[str] | None = None  # a termination: the categories whose scope it ends (None: all)


@dataclass(frozen=True)
class Meaning:
    """What a vocabulary phrase stands for. No definitions and no cue: an ignored phrase."""

    definitions: tuple[Definition, ...] = ()
    fixed: str | None = None
    anchor: bool = False
    cue: Cue | None = None


@dataclass(frozen=True)
class Lexicon:
    regex: re.Pattern[str]
    meanings: dict[str, Meaning]
    patterns: tuple[tuple[re.Pattern[str], Meaning], ...]
    definitions: dict[str, Definition]
    conjunctions: re.Pattern[str]
    inclusive: frozenset[str]
    breakers: frozenset[str]
    negated_history: dict[str, Status]


def _read_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("meddx.data").joinpath(name).read_text(encoding="utf-8"))


def _phrase(value: object) -> str:
    """A vocabulary phrase as its lookup key; YAML turns a bare ``no`` into False, so insist on text."""
    if not isinstance(value, str):
        raise TypeError(f"vocabulary phrase {value!r} is not text: quote it in the YAML file")
    return phrase_key(value)


def phrase_key(phrase: str) -> str:
    return " ".join(_SEP_RE.sub(" ", phrase.lower().strip()).split())


def _plural(word: str) -> str | None:
    if not word.isalpha() or len(word) < 4:  # not "doe" -> "does", "pe" -> "pes"
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


def _concept_meanings(notes: dict) -> tuple[dict[str, Meaning], dict[str, Definition]]:
    """Phrase -> meaning for findings, note concepts, fixed-status phrases, anchors and ignored phrases."""
    meanings: dict[str, Meaning] = {}
    definitions: dict[str, Definition] = {}

    def add(phrase: str, definition: Definition) -> None:
        words = _phrase(phrase).split(" ")
        keys = [" ".join(words)]
        if tail := _plural(words[-1]):
            keys.append(" ".join([*words[:-1], tail]))
        for key in keys:
            old = meanings.get(key, Meaning())
            if definition not in old.definitions:
                meanings[key] = Meaning(definitions=(*old.definitions, definition))

    for finding in load_vocabulary().findings:
        definitions[finding.id] = Definition(finding.id, finding.name, "finding", (finding.id,))
        for synonym in finding.synonyms:
            add(synonym, definitions[finding.id])
    finding_keys = set(meanings)
    for item in notes["concepts"]:
        definition = Definition(item["id"], item["name"], item["category"], tuple(item.get("supports", ())))
        definitions[item["id"]] = definition
        for synonym in item.get("synonyms", ()):
            key = _phrase(synonym)
            if key in finding_keys:  # a note concept wins over a finding synonym spelled the same
                del meanings[key]
                finding_keys.discard(key)
            add(synonym, definition)
    for group in notes.get("fixed_status", ()):
        for phrase in group["phrases"]:
            meanings[_phrase(phrase)] = Meaning((definitions[group["concept"]],), fixed=group["status"])
    for group in notes.get("anchors", ()):
        anchored = tuple(definitions[f] for f in group["findings"])
        for phrase in group["phrases"]:
            meanings.setdefault(_phrase(phrase), Meaning(anchored, anchor=True))
    for phrase in notes.get("ignore", ()):
        meanings[_phrase(phrase)] = Meaning()
    return meanings, definitions


def _cue_meanings(cues: dict) -> dict[str, Meaning]:
    """Phrase -> meaning for ConText cues, neutral phrases and terminations."""
    meanings: dict[str, Meaning] = {}
    for category in ("negation", "uncertainty", "historical", "negated_history", "family", "pseudo"):
        for direction, items in cues[category].items():
            for item in items:
                item = item if isinstance(item, dict) else {"phrase": item}
                cue = Cue(category, direction, item.get("max_words"), item.get("max_words_back"))
                meanings[_phrase(item["phrase"])] = Meaning(cue=cue)
    for phrase in cues.get("neutral", ()):
        meanings[_phrase(phrase)] = Meaning()
    for phrase in cues["termination"]:
        meanings[_phrase(phrase)] = Meaning(cue=Cue("termination", "bidirectional"))
    ends: dict[str, set[str]] = {}
    for category, phrases in cues.get("termination_of", {}).items():
        for phrase in phrases:
            ends.setdefault(_phrase(phrase), set()).add(category)
    for key, categories in ends.items():
        meanings[key] = Meaning(cue=Cue("termination", "bidirectional", ends=frozenset(categories)))
    return meanings


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """Load the three vocabularies and compile them into one regex (once per process)."""
    notes, cues = _read_yaml("note_concepts.yaml"), _read_yaml("context_cues.yaml")
    meanings, definitions = _concept_meanings(notes)
    meanings.update(_cue_meanings(cues))  # a cue wins over a concept phrase spelled the same
    patterns = tuple(
        (re.compile(p["regex"]), Meaning(cue=Cue(p["category"], p["direction"], p.get("max_words"))))
        for p in cues.get("patterns", ())
    ) + tuple(
        (re.compile(p["regex"]), Meaning((definitions[p["concept"]],))) for p in notes.get("patterns", ())
    )
    rules = cues["list_rules"]
    conjunctions = "|".join(re.escape(c) for c in [*rules["conjunctions"], *rules["inclusive_conjunctions"]])
    return Lexicon(
        regex=re.compile(f"(?=({_EDGE}{_trie_regex(meanings)}{_EDGE}))"),
        meanings=meanings,
        patterns=patterns,
        definitions=definitions,
        conjunctions=re.compile(rf"(?<!{ALNUM})(?:{conjunctions})(?!{ALNUM})"),
        inclusive=frozenset(rules["inclusive_conjunctions"]),
        breakers=frozenset(rules["breakers"]),
        negated_history={k: Status(v) for k, v in cues["negated_history_status"].items()},
    )
