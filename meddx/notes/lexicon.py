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

from meddx.data import DataFile, load
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
    within_item: bool = False  # the cue reaches no farther than the next comma ("?PE, SOB": SOB is stated)


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
    patterns: tuple[tuple[re.Pattern[str], Meaning, tuple[str, ...]], ...]  # regex, meaning, required text
    definitions: dict[str, Definition]
    conjunctions: re.Pattern[str]
    inclusive: frozenset[str]
    breakers: frozenset[str]
    negated_history: dict[str, Status]
    backward_breakers: re.Pattern[str]
    anticipation: re.Pattern[str]
    past_tense: re.Pattern[str]
    headings: re.Pattern[str]
    heading_status: dict[str, Status]


_CATEGORIES = frozenset({"finding", "symptom", "risk_factor", "history", "device", "demographic", "vital"})
_CUE_CATEGORIES = (
    "negation",
    "uncertainty",
    "historical",
    "negated_history",
    "family",
    "hypothetical",
    "pseudo",
)
_DIRECTIONS = frozenset({"forward", "backward", "bidirectional", "either"})


def _phrase(item: DataFile) -> str:
    """A vocabulary phrase as its lookup key; YAML turns a bare ``no`` into False, so insist on text."""
    return phrase_key(item.text())


def _choice(item: DataFile, allowed: Iterable[str]) -> str:
    if item.value not in allowed:
        raise item.fail(f"one of {', '.join(sorted(allowed))}")
    return item.value


def _words(item: DataFile) -> int | None:
    return None if item.value is None else int(item.number(low=0, high=50))


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


def _concept_meanings(notes: DataFile) -> tuple[dict[str, Meaning], dict[str, Definition]]:
    """Phrase -> meaning for findings, note concepts, fixed-status phrases, anchors and ignored phrases."""
    meanings: dict[str, Meaning] = {}
    definitions: dict[str, Definition] = {}

    def add(key: str, definition: Definition) -> None:
        words = key.split(" ")
        keys = [key]
        if tail := _plural(words[-1]):
            keys.append(" ".join([*words[:-1], tail]))
        for k in keys:
            old = meanings.get(k, Meaning())
            if definition not in old.definitions:
                meanings[k] = Meaning(definitions=(*old.definitions, definition))

    def defined(item: DataFile) -> Definition:
        if item.value not in definitions:
            raise item.fail("a finding id (findings.yaml) or a concept id above")
        return definitions[item.value]

    for finding in load_vocabulary().findings:
        definitions[finding.id] = Definition(finding.id, finding.name, "finding", (finding.id,))
        for synonym in finding.synonyms:
            add(phrase_key(synonym), definitions[finding.id])
    finding_ids, finding_keys = set(definitions), set(meanings)
    for item in notes["concepts"].items():
        supports = item.get("supports", [])
        for finding in supports.items():
            _choice(finding, finding_ids)
        definition = Definition(
            item["id"].text(), item["name"].text(), _choice(item["category"], _CATEGORIES), supports.texts()
        )
        definitions[definition.name] = definition
        for synonym in item.get("synonyms", []).items():
            key = _phrase(synonym)
            if key in finding_keys:  # a note concept wins over a finding synonym spelled the same
                del meanings[key]
                finding_keys.discard(key)
            add(key, definition)
    for group in notes.get("fixed_status", []).items():
        concept, status = defined(group["concept"]), Status(_choice(group["status"], set(Status)))
        for phrase in group["phrases"].items():
            meanings[_phrase(phrase)] = Meaning((concept,), fixed=status)
    for group in notes.get("anchors", []).items():
        anchored = tuple(defined(f) for f in group["findings"].items())
        for phrase in group["phrases"].items():
            meanings.setdefault(_phrase(phrase), Meaning(anchored, anchor=True))
    for phrase in notes.get("ignore", []).items():
        meanings[_phrase(phrase)] = Meaning()
    return meanings, definitions


def _cue_meanings(cues: DataFile) -> dict[str, Meaning]:
    """Phrase -> meaning for ConText cues, neutral phrases and terminations."""
    meanings: dict[str, Meaning] = {}
    for category in _CUE_CATEGORIES:
        for direction in cues[category].mapping():
            if direction not in _DIRECTIONS:
                raise cues[category].fail(f"directions among {', '.join(sorted(_DIRECTIONS))}")
            for item in cues[category][direction].items():
                if isinstance(item.value, dict):
                    cue = Cue(
                        category, direction, _words(item.get("max_words")), _words(item.get("max_words_back"))
                    )
                    meanings[_phrase(item["phrase"])] = Meaning(cue=cue)
                else:
                    meanings[_phrase(item)] = Meaning(cue=Cue(category, direction))
    for phrase in cues.get("neutral", []).items():
        meanings[_phrase(phrase)] = Meaning()
    for phrase in cues["termination"].items():
        meanings[_phrase(phrase)] = Meaning(cue=Cue("termination", "bidirectional"))
    ends: dict[str, set[str]] = {}
    for category in cues.get("termination_of", {}).mapping():
        for phrase in cues["termination_of"][category].items():
            ends.setdefault(_phrase(phrase), set()).add(category)
    for key, categories in ends.items():
        meanings[key] = Meaning(cue=Cue("termination", "bidirectional", ends=frozenset(categories)))
    return meanings


def _regex(item: DataFile) -> re.Pattern[str]:
    try:
        return re.compile(item.text())
    except re.error as exc:
        raise item.fail(f"a regular expression ({exc})") from None


_HEADING_END = r"[ \t]*(?::|[ \t]-[ \t]|(?=[ \t]*(?:\n|$)))"  # a heading ends with ":", " - " or its line


def _words_regex(phrases: Iterable[str]) -> re.Pattern[str]:
    """Any of ``phrases`` as whole words, any run of spaces between their words."""
    body = "|".join(_SEP.join(re.escape(w) for w in p.split()) for p in phrases)
    return re.compile(rf"(?<!{ALNUM})(?:{body})(?!{ALNUM})")


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """Load the three vocabularies and compile them into one regex (once per process)."""
    notes, cues = load("note_concepts.yaml"), load("context_cues.yaml")
    meanings, definitions = _concept_meanings(notes)
    meanings.update(_cue_meanings(cues))  # a cue wins over a concept phrase spelled the same
    patterns = tuple(
        (
            _regex(p["regex"]),
            Meaning(
                cue=Cue(
                    _choice(p["category"], _CUE_CATEGORIES),
                    _choice(p["direction"], _DIRECTIONS),
                    _words(p.get("max_words")),
                    within_item=bool(p.get("within_item", False).value),
                )
            ),
            p.get("requires", []).texts(),
        )
        for p in cues.get("patterns", []).items()
    ) + tuple(
        (
            _regex(p["regex"]),
            Meaning((definitions[_choice(p["concept"], definitions)],)),
            p.get("requires", []).texts(),
        )
        for p in notes.get("patterns", []).items()
    )
    rules = cues["list_rules"]
    plain, inclusive = rules["conjunctions"].texts(), rules["inclusive_conjunctions"].texts()
    conjunctions = "|".join(re.escape(c) for c in [*plain, *inclusive])
    negated_history = cues["negated_history_status"]
    categories = {k: Status(_choice(negated_history[k], set(Status))) for k in negated_history.mapping()}
    heading_status = {}
    for status in cues["sections"].mapping():
        if status not in set(Status):
            raise cues["sections"].fail(f"statuses among {', '.join(Status)}")
        for phrase in cues["sections"][status].items():
            heading_status[_phrase(phrase)] = Status(status)
    return Lexicon(
        headings=re.compile(f"({_trie_regex(heading_status)})" + _HEADING_END),
        heading_status=heading_status,
        backward_breakers=_words_regex(rules["backward_breakers"].texts()),
        anticipation=_words_regex(rules["anticipation"].texts()),
        past_tense=_words_regex(rules["past_tense"].texts()),
        regex=re.compile(f"(?=({_EDGE}{_trie_regex(meanings)}{_EDGE}))"),
        meanings=meanings,
        patterns=patterns,
        definitions=definitions,
        conjunctions=re.compile(rf"(?<!{ALNUM})(?:{conjunctions})(?!{ALNUM})"),
        inclusive=frozenset(inclusive),
        breakers=frozenset(rules["breakers"].texts()),
        negated_history=categories,
    )
