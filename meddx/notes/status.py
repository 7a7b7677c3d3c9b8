"""What the notes say about a concept: the statuses, their one precedence, and their words."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    """What the notes say about a concept. The one list of statuses; their order is `PRECEDENCE`."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"
    HISTORICAL = "historical"
    NO_HISTORY = "no_history"
    """"no history of X": no past X. Says nothing about now, so it never counts as X absent."""
    FAMILY = "family"
    HYPOTHETICAL = "hypothetical"
    """Advice, a plan or a condition ("call if fever develops", "watch for haemoptysis"): not evidence."""


PRECEDENCE: tuple[Status, ...] = (
    Status.PRESENT,
    Status.UNCERTAIN,
    Status.HISTORICAL,
    Status.ABSENT,
    Status.NO_HISTORY,
    Status.HYPOTHETICAL,
    Status.FAMILY,
)
"""How several mentions of one concept become one status: the first that occurs wins (a finding stated
present anywhere is present; "absent" needs every mention negated)."""
STATUSES = tuple(Status)
FINDING_PRECEDENCE = tuple(s for s in PRECEDENCE if s is not Status.FAMILY)
"""`finding_statuses` leaves family-history mentions out: they are not the patient's."""


def strongest(statuses: Iterable[str]) -> Status | None:
    """The status that wins by `PRECEDENCE` among ``statuses`` (None when there are none)."""
    ranked = [PRECEDENCE.index(Status(s)) for s in statuses]
    return PRECEDENCE[min(ranked)] if ranked else None


STATUS_WORDS: dict[Status, str] = {
    Status.PRESENT: "present",
    Status.ABSENT: "absent (negated)",
    Status.UNCERTAIN: "uncertain",
    Status.HISTORICAL: "in the history",
    Status.NO_HISTORY: "no past history (says nothing about now)",
    Status.FAMILY: "family history",
    Status.HYPOTHETICAL: "hypothetical (advice or a plan: not evidence)",
}
"""How the report and the page name each status."""

__all__ = ["FINDING_PRECEDENCE", "PRECEDENCE", "STATUSES", "STATUS_WORDS", "Status", "strongest"]
