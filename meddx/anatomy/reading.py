"""The anatomy stage: once per analysis, the lung fields of the film, the chest-film check and the CTR.

`read_anatomy` runs the lung-field network on the windowed grey film (any encoder: it does not use the
image-text model). On a lateral film it does nothing (the network knows frontal films only). `Anatomy`
then names map regions (`locate`), gives its warning and the CTR text, and its JSON (`to_dict`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from meddx.anatomy import ctr, naming, network, plausibility
from meddx.anatomy.fields import LungFields, segment
from meddx.anatomy.plausibility import ChestCheck
from meddx.explain.regions import LATERAL, view_kind


@dataclass(frozen=True)
class Anatomy:
    """What the lung-field model found on one film; ``fields`` is None on a lateral film."""

    fields: LungFields | None
    check: ChestCheck
    ctr: ctr.CtrEstimate | None
    seconds: float = 0.0

    @property
    def lungs(self) -> bool:
        """Whether regions can be named by the lungs: a plausible pair of lung fields was found."""
        return self.fields is not None and self.check.plausible

    @property
    def chest_film(self) -> bool:
        """False only when a frontal film showed no plausible pair of lungs (the warning is given)."""
        return self.check.plausible

    def warnings(self) -> list[str]:
        found = self.check.warning()
        return [found] if found else []

    def locate(self, box, height: int, width: int) -> naming.Location | None:
        """The box's location by the lung fields (film of ``height`` x ``width``), or None without lungs."""
        return naming.locate(box, height, width, self.fields) if self.lungs else None

    def outline(self, height: int, width: int) -> np.ndarray | None:
        """The lungs' outlines at that size (bool), or None without plausible lungs."""
        return self.fields.outline(height, width) if self.lungs else None

    def ctr_text(self) -> str | None:
        return self.ctr.text() if self.lungs and self.ctr is not None else None

    def measurements(self) -> dict[str, str]:
        """Text shown beside a finding, by finding id: the CTR beside cardiomegaly."""
        text = self.ctr_text()
        return {"cardiomegaly": text} if text else {}

    def to_dict(self) -> dict:
        return {
            "lung_fields": self.lungs,
            "chest_film": self.chest_film,
            "reasons": list(self.check.reasons),
            "ctr": self.ctr.to_dict() if self.lungs and self.ctr is not None else None,
            "model": network.WEIGHTS_FILE.name,
        }


def from_fields(found: LungFields, image: np.ndarray, view_position: str | None) -> Anatomy:
    """The anatomy given lung fields and the film as the network saw it ((S, S) in [0, 1])."""
    check = plausibility.check(found, image)
    return Anatomy(found, check, ctr.estimate(found, view_position) if check.plausible else None)


def read_anatomy(grey: np.ndarray, view_position: str | None = None) -> Anatomy:
    """Run the lung-field model on a grey film (2-D) and check what it found."""
    if view_kind(view_position) == LATERAL:
        return Anatomy(None, ChestCheck(()), None)
    start = time.perf_counter()
    x = network.prepare(grey)
    anatomy = from_fields(segment(x), x[0, 0].numpy(), view_position)
    return Anatomy(anatomy.fields, anatomy.check, anatomy.ctr, time.perf_counter() - start)
