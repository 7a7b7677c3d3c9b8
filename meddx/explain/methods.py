"""The attribution methods by name, what each costs and whether it passed the faithfulness test, and how
many maps one analysis draws at most; no model needed (the page's method menu, the report and the docs
read these; `meddx.explain.maps` implements the methods).

Each method's card is data (``meddx/data/map_methods.yaml``), written from ``python -m meddx
attribution-check`` (docs/maps.md has the full table). **The test** (issue 24): on the planted tiny model,
for two seeds of 40 held-out films, blurred deletion at least 0.02 AUC below random patch order and
insertion at least 0.02 above it, each bootstrap 95 % interval excluding random order, and a map that falls
towards chance when the image tower is randomised. The default is the fastest method that passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from meddx.data import load

CARDS_FILE = "map_methods.yaml"


@dataclass(frozen=True)
class MethodCard:
    """One attribution method as users are told about it.

    Attributes:
        key: the method's name in the API (``gradcam``).
        name: its name in words (``Grad-CAM``).
        summary: what it is, in one sentence.
        forwards_per_map: measured time per map over a forward of the image tower (BiomedCLIP's
            architecture, 2 threads), or None if not measured.
        cost: that measurement in words.
        passed: whether it passed the test (module docstring).
        evidence: the numbers the verdict rests on.
        numbers: the same, short, for the report.
        menu_note: what the method menu says beside the cost.
    """

    key: str
    name: str
    summary: str
    forwards_per_map: float | None
    cost: str
    passed: bool
    evidence: str
    numbers: str
    menu_note: str

    @property
    def verdict(self) -> str:
        """One sentence: passed or failed, with the numbers."""
        word = "passed" if self.passed else "did not pass"
        return f"{self.name} {word} meddx's faithfulness test on a planted test model ({self.numbers})."


def load_cards() -> dict[str, MethodCard]:
    """The method cards of ``map_methods.yaml``, in menu order (checked: a bad value names its key)."""
    cards = {}
    for entry in load(CARDS_FILE)["methods"].items():
        forwards = entry.get("forwards_per_map")
        passed = entry["passed"]
        if not isinstance(passed.value, bool):
            raise passed.fail("true or false")
        key = entry["key"].text()
        cards[key] = MethodCard(
            key=key,
            name=entry["name"].text(),
            summary=entry["summary"].text(),
            forwards_per_map=None if forwards.value is None else forwards.number(low=0),
            cost=entry["cost"].text(),
            passed=passed.value,
            evidence=entry["evidence"].text(),
            numbers=entry["numbers"].text(),
            menu_note=entry["menu_note"].text(),
        )
    return cards


METHOD_CARDS = load_cards()
METHOD_NAMES = {key: card.name for key, card in METHOD_CARDS.items()}
"""Each method's name in words, as reports and the page show it."""
DEFAULT_METHOD = "gradcam"
"""Chosen by the test: the fastest method that passes; Grad-CAM, labelled as failing, when none does."""
FAST_METHODS = frozenset({"gradcam", "legrad", "rollout"})  # all targets in one pass (one budget check)
MAX_MAPS = 5
"""The most maps one analysis draws."""
