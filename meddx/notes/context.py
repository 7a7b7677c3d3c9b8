"""ConText scope rules (Harkema et al., J Biomed Inform 2009): clauses, and each concept's status from
the cues around it. The rules are described in ``data/context_cues.yaml``."""

from __future__ import annotations

import bisect
import itertools
import re

from meddx.notes.lexicon import WORD_RE, Cue, Lexicon
from meddx.notes.matches import Match
from meddx.notes.status import Status

_CUE_STATUS = {
    "negation": Status.ABSENT,
    "uncertainty": Status.UNCERTAIN,
    "historical": Status.HISTORICAL,
    "negated_history": Status.NO_HISTORY,
    "family": Status.FAMILY,
    "hypothetical": Status.HYPOTHETICAL,
}
_CHAIN_PRECEDENCE = ("family", "hypothetical", "negated_history", "negation", "uncertainty", "historical")
_FORWARD = frozenset({"forward", "bidirectional", "either"})
_BACKWARD = frozenset({"backward", "bidirectional", "either"})
REACH = 300  # characters: the farthest any cue acts, however long the clause
_BREAK_RE = re.compile(r"[.!?](?=\s|$)|;|\n")
_NEXT_RE = re.compile(r"[ \t]*(\S)")
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "vs", "eg", "ie", "approx", "pt", "yo", "fig", "sr", "jr", "cf"}
    | {"resp", "temp", "sat", "sats", "hr", "bp", "rr"}
)


def clauses(cleaned: str, low: str) -> list[tuple[int, int]]:
    """Clause spans: sentence ends (not after abbreviations or initials), ";" and item-starting new lines.

    A new line followed by a lower-case letter continues the sentence (a wrapped line); a full stop ends
    it whatever follows ("... effusion. stable cardiomegaly" is two sentences).
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
            if (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS:
                continue
        elif char == "\n" and nxt.islower():
            continue
        spans.append((start, pos + 1))
        start = pos + 1
    if start < len(low):
        spans.append((start, len(low)))
    return spans


class Clause:
    """The cues and concepts of one clause, and the ConText scope rules over them.

    Matches are sorted by position and never overlap, so "is there one between a and b" is a bisection.
    No cue reaches farther than `REACH` characters, which keeps a pathological clause (thousands of
    comma-separated items) linear.
    """

    def __init__(self, low: str, end: int, matches: list[Match], lex: Lexicon) -> None:
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
    def _any_between(starts: list[int], items: list[Match], a: int, b: int) -> bool:
        i = bisect.bisect_left(starts, a)
        return i < len(items) and items[i].end <= b

    def _terminated(self, a: int, b: int, category: str) -> bool:
        """Whether a termination that ends ``category``'s scope lies within low[a:b]."""
        i = bisect.bisect_left(self._termination_starts, a)
        for termination in itertools.takewhile(lambda t: t.end <= b, self.terminations[i:]):
            if termination.cue.ends is None or category in termination.cue.ends:
                return True
        return False

    def ends_history(self, start: int, target: Match) -> bool:
        """Whether a word that ends a history ("now", "presents with", "today") stands between ``start``
        (the clause's) and ``target``."""
        return self._terminated(start, target.start, "historical")

    def _blocked(self, a: int, b: int, cue: Cue, forward: bool) -> bool:
        """Whether the gap low[a:b] between a cue and a concept stops the cue's scope."""
        if b - a > REACH or self._terminated(a, b, cue.category):
            return True
        gap = self.low[a:b]
        if cue.within_item and "," in gap:
            return True
        reach = cue.max_words if forward or cue.max_words_back is None else cue.max_words_back
        if reach is not None and len(WORD_RE.findall(gap)) > reach:
            return True
        comma = gap.find(",")
        if comma < 0 or (forward and gap.lstrip().startswith(":")):
            return False
        if not forward:  # "effusion, now resolved" / "X, Y and Z are not seen"; not "X, Y is not seen"
            return bool(gap[comma:].strip(" ,")) and not self.lex.conjunctions.search(gap[comma:])
        # Forward over a comma: a list under the cue. An "or" list is the cue's to its end ("no focal
        # consolidation, large effusion, or pneumothorax"); otherwise an item that opens with a breaker
        # word starts a new statement ("no pneumothorax, small effusion and edema").
        listed = self.lex.conjunctions.search(self.low, a + comma, min(self.end, b + REACH))
        if listed and listed.group() in self.lex.inclusive:
            return False
        for piece in gap.split(",")[1:]:
            words = WORD_RE.findall(self.lex.conjunctions.sub(" ", piece, count=1))
            if words and words[0] in self.lex.breakers:
                return True
        return False

    def _forward_covers(self, cue: Match, target: Match) -> bool:
        if cue.end > target.start:
            return False
        if cue.cue.direction == "either" and "," in self.low[cue.end : target.start]:
            return False  # "heart size normal, lungs clear": a cue placed after its concept looks back
        return not self._blocked(cue.end, target.start, cue.cue, True)

    def _backward_covers(self, cue: Match, target: Match) -> bool:
        if target.end > cue.start or self._blocked(target.end, cue.start, cue.cue, False):
            return False
        if cue.cue.direction == "either":  # backward only when nothing follows it in scope
            return not self._acts_forward_on_something(cue)
        return True

    def _acts_forward_on_something(self, cue: Match) -> bool:
        if cue.start not in self._acts_forward:
            i = bisect.bisect_left(self._concept_starts, cue.end)
            following = itertools.takewhile(lambda c: c.start - cue.end <= REACH, self.concepts[i:])
            self._acts_forward[cue.start] = any(self._forward_covers(cue, c) for c in following)
        return self._acts_forward[cue.start]

    def _covering(self, nearby: list[Match], target: Match, forward: bool) -> list[Match]:
        """The nearest cue that covers ``target`` from one side, plus farther ones adjacent to it (no concept
        between them), nearest first. Stops at the first concept between: each concept costs a few cues,
        however many cues the clause holds ("no effusion, no effusion, ...")."""
        chain: list[Match] = []
        if not forward:  # no backward cue reaches over a breaker: "cough, so a film ... was unremarkable"
            reach = min(self.end, target.end + REACH)
            breaker = self.lex.backward_breakers.search(self.low, target.end, reach)
            stop = breaker.end() if breaker else self.end + 1
        for cue in reversed(nearby) if forward else nearby:
            if not forward and cue.start >= stop:
                break
            if chain:
                left, right = (cue.end, chain[-1].start) if forward else (chain[-1].end, cue.start)
                if self._any_between(self._concept_starts, self.concepts, left, right):
                    break
            if self._covers(cue, target, forward):
                chain.append(cue)
        return chain

    def _covers(self, cue: Match, target: Match, forward: bool) -> bool:
        if forward:
            return cue.cue.direction in _FORWARD and self._forward_covers(cue, target)
        return cue.cue.direction in _BACKWARD and self._backward_covers(cue, target)

    def _chain(self, chain: list[Match], target: Match, forward: bool) -> list[Cue]:
        """The cues of a chain. A pseudo cue ends it and is not part of it. "No history of" with a word
        that ends a history before the target ("no history of COPD or new cough") negates it."""
        cues = [
            _NEGATION
            if c.cue.category == "negated_history"
            and forward
            and self._terminated(c.end, target.start, "historical")
            else c.cue
            for c in chain
        ]
        pseudo = next((i for i, c in enumerate(cues) if c.category == "pseudo"), len(cues))
        return cues[:pseudo]

    def _anticipated(self, chain: list[Match], target: Match) -> bool:
        """ "until the drain is removed", "until the infection has resolved": a negation still to come, so
        the concept is there now (not "until the line was removed")."""
        if not chain or chain[0].cue.category != "negation":
            return False
        opener = self.lex.anticipation.search(self.low, max(0, target.start - 80), target.start)
        if opener is None or self._terminated(opener.end, target.start, "negation"):
            return False
        return not self.lex.past_tense.match(self.low, chain[0].start)

    def status(self, target: Match) -> Status:
        """ConText status of one concept match."""
        lo = bisect.bisect_left(self._cue_starts, target.start - REACH)
        mid = bisect.bisect_left(self._cue_starts, target.start)
        hi = bisect.bisect_right(self._cue_starts, target.end + REACH)
        after = self._covering(self.cues[mid:hi], target, False)
        if self._anticipated(after, target):
            after = []
        forward = self._chain(self._covering(self.cues[lo:mid], target, True), target, True)
        backward = self._chain(after, target, False)
        categories = {c.category for c in forward + backward}
        if target.immune:
            return Status.FAMILY if "family" in categories else Status.PRESENT
        if any(_outscopes(chain, "uncertainty", "negation") for chain in (forward, backward)):
            return Status.UNCERTAIN
        if any(_outscopes(chain, "negation", "historical") for chain in (forward, backward)):
            categories.add("negated_history")  # "no previous TB", "denies prior pneumothorax"
        for category in _CHAIN_PRECEDENCE:
            if category in categories:
                return _CUE_STATUS[category]
        return Status.PRESENT


_NEGATION = Cue("negation", "forward")


def _outscopes(chain: list[Cue], outer: str, inner: str) -> bool:
    """Whether, in a nearest-first chain, an ``outer`` cue stands farther out than an ``inner`` one."""
    names = [c.category for c in chain]
    return outer in names and inner in names and names.index(outer) > names.index(inner)
