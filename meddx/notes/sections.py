"""Section headings in a note ("PMH", "Past medical history:", "Family history", "Advice") and the lines
they govern.

A heading starts a line (after spaces or a bullet) or follows a sentence end, and is followed by ":",
" - " or the end of its line. It gives the lines *under* it a status (``sections`` in
``data/context_cues.yaml``) until the next heading or a blank line that follows at least one governed
line; its own line is read by the ordinary cues ("PMH: COPD, now with cough": the cough is current). A
heading whose status is ``present`` (HPC, Examination, Plan...) only ends the section before it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from meddx.notes.lexicon import phrase_key
from meddx.notes.status import Status

_BLANK_RE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Section:
    start: int  # first governed character: the start of the line after the heading
    end: int
    status: Status


def _starts_a_line(low: str, position: int) -> bool:
    """Whether only spaces or a bullet stand between a line start (or a sentence end) and ``position``."""
    before = low[max(0, position - 40) : position]
    line = before.rsplit("\n", 1)[-1]
    head = line.rstrip(" \t").rstrip("-*•·").rstrip(" \t")
    if not head:
        return "\n" in before or position - len(line) <= 0
    return head.endswith((".", ";")) and line != head


def sections(low: str, regex: re.Pattern[str], statuses: dict[str, Status]) -> Sections:
    """The governed spans of ``low`` (the lower-cased note), in order."""
    found = []
    for m in regex.finditer(low):
        if not _starts_a_line(low, m.start()):
            continue
        line_end = low.find("\n", m.end())
        found.append(
            (m.start(), len(low) if line_end < 0 else line_end + 1, statuses[phrase_key(m.group(1))])
        )
    out = []
    for i, (_, body, status) in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(low)
        blank = _BLANK_RE.search(low, body, end)
        while blank and not low[body : blank.start()].strip():  # blank lines right under the heading
            blank = _BLANK_RE.search(low, blank.end() - 1, end)
        if blank:
            end = blank.start()
        if status != Status.PRESENT and end > body:
            out.append(Section(body, end, status))
    return Sections(out)


class Sections:
    """The governed spans of a note, looked up by position."""

    def __init__(self, spans: list[Section]) -> None:
        self.spans = spans
        self._starts = [s.start for s in spans]

    def status(self, position: int) -> Status | None:
        """The status of the section that governs ``position``, if any."""
        i = bisect.bisect_right(self._starts, position) - 1
        return self.spans[i].status if i >= 0 and position < self.spans[i].end else None


__all__ = ["Section", "Sections", "sections"]
