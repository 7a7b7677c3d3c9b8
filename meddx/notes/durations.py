"""How long a symptom has lasted: "SOB x3d", "cough for 3 wk", "3-day history of fever", "chest pain 2/7".

A duration belongs to the present symptoms in its own comma-delimited piece of the clause: those before
it ("cough and wheeze for 3 days"), or those after it when it opens the piece ("3 days of fever and
cough", "2-week history of cough"). "3 days ago" (an onset), "3 days old" (an age) and a bare "x2" (a
count) are not durations. Clinical shorthand: "3/52" weeks, "2/7" days, "6/12" months.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from meddx.notes.status import Status

if TYPE_CHECKING:
    from meddx.notes.reader import Concept

_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
_WORDS |= {"eight": 8, "nine": 9, "ten": 10, "twelve": 12, "several": 3, "few": 3, "couple of": 2}
_DAYS = {"h": 1 / 24, "d": 1.0, "w": 7.0, "m": 30.4, "y": 365.25}
_SHORTHAND = {"52": 7.0, "7": 1.0, "12": 30.4}
# not "m" (male) nor "y" (an age)
_UNIT = r"(?P<unit>hours?|hrs?|h|days?|d|weeks?|wks?|w|months?|mths?|mos?|years?|yrs?)"
_NUMBER = (  # a number word needs a space or a hyphen before its unit ("a week"; not "an" + "d" in "and")
    r"(?:(?P<n>\d{1,3}(?:\.\d)?)|(?P<w>an?|one|two|three|four|five|six|seven|eight|nine|ten|twelve|several"
    r"|few|couple\s+of)(?:\s++|-))"
)
_DURATION_RE = re.compile(
    rf"(?<![\w/.])(?:(?P<pre>x|for|over|since|past|last|the\s+past|the\s+last)\s*+)?{_NUMBER}\s*+-?\s*+{_UNIT}"
    r"(?![^\W_])(?!\s*+-?\s*+(?:old|ago)(?![^\W_]))(?!\s*+[:=]?\s*+\d)(?P<of>\s*+(?:of|hx\s+of|history\s+of|h/o)(?![^\W_]))?"
    r"|(?<![\w/.])(?P<pre2>x\s*+)?(?P<n2>\d{1,2})/(?P<base>52|7|12)(?![\w/])"
)


def _days(m: re.Match[str]) -> float:
    if m.group("n2"):
        return float(m.group("n2")) * _SHORTHAND[m.group("base")]
    n = m.group("n")
    count = float(n) if n else float(_WORDS[" ".join(m.group("w").split())])
    unit = m.group("unit")
    key = "m" if unit.startswith(("mo", "mth")) else unit[0]
    return count * _DAYS[key]


def with_durations(concepts: list[Concept], low: str, clauses: list[tuple[int, int]]) -> list[Concept]:
    """``concepts`` with ``duration_days`` set on the present symptoms each duration in ``low`` speaks of."""
    if not any(c.category == "symptom" and c.status == Status.PRESENT for c in concepts):
        return concepts
    durations: dict[tuple[int, int], float] = {}
    clause_starts = [start for start, _ in clauses]
    for m in _DURATION_RE.finditer(low):  # one pass; each match is read within its clause
        start, end = clauses[bisect.bisect_right(clause_starts, m.start()) - 1]
        left = max(low.rfind(",", start, m.start()), low.rfind(";", start, m.start()), start - 1) + 1
        right = min(i for i in (low.find(",", m.end(), end), end) if i >= 0)
        after = bool(m.group("of")) or not low[left : m.start()].strip()
        span = (m.end(), right) if after else (left, m.start())
        durations[span] = round(_days(m), 2)
    if not durations:
        return concepts
    spans = sorted(durations)
    starts = [a for a, _ in spans]
    out = []
    for c in concepts:
        i = bisect.bisect_right(starts, c.start) - 1
        days = durations[spans[i]] if i >= 0 and c.end <= spans[i][1] else None
        if days is not None and c.category == "symptom" and c.status == Status.PRESENT and c.value is None:
            c = replace(c, duration_days=days)
        out.append(c)
    return out


__all__ = ["with_durations"]
