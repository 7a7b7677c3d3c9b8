"""Is it a chest film? Whether the lung fields found are a plausible pair of lungs.

A frontal chest film has two lungs: each one connected region holding most of what the network called that
lung, of a lung's size, compact, on its own side, at mid height, of similar height to the other, and not
brighter than the tissue around it (an opacified lung, as in severe ARDS, can be as bright as its
surroundings: the sample ARDS film measured +0.009 on the left, so "darker" alone would refuse it).
`check` tests each of these on the fields' square and gives the reasons that failed; none: plausible.
The bounds (`BOUNDS`) were set on the hand-drawn masks of the 704-film
lung-mask set (per lung 1.9-26 % of the film), with a margin: 700 of the 704 pass (the rest have collapsed
or misshapen lungs, so the warning says what it found, not that the film is not a chest film). They were
then checked on the nine sample films and on generated non-chest images (docs/anatomy.md gives the rates).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from meddx.anatomy.fields import LEFT, RIGHT, LungFields

BOUNDS = {
    "area": (0.015, 0.30),  # each lung, fraction of the film
    "solidity": 0.70,  # area / convex hull area
    "kept": 0.85,  # the largest component's share of all pixels called that lung
    "height_ratio": 0.5,  # shorter lung / taller lung
    "centre_y": (0.2, 0.8),  # centroids' height, fraction of the film
    "contrast": -0.02,  # the ring around a lung minus the lung, on the 1st-99th percentile scale
    "confidence": 0.75,  # mean probability inside a lung
}
WARNING = (
    "This may not be a frontal chest X-ray: no plausible pair of lung fields was found ({why}). If it is "
    "not a frontal chest film, the scores are not meaningful; upload one."
)


@dataclass(frozen=True)
class ChestCheck:
    """The outcome: ``plausible`` when no reason failed."""

    reasons: tuple[str, ...]

    @property
    def plausible(self) -> bool:
        return not self.reasons

    def warning(self) -> str | None:
        """The one-line warning for every surface, or None for a plausible chest film."""
        return None if self.plausible else WARNING.format(why="; ".join(self.reasons[:3]))


def _lung_reasons(name: str, fields: LungFields, side: str, image: np.ndarray) -> tuple[list[str], dict]:
    mask = fields.lung(side)
    size = mask.size
    area = mask.sum() / size
    low, high = BOUNDS["area"]
    if area == 0:
        return [f"no {name} lung"], {}
    reasons = []
    if not low <= area <= high:
        reasons.append(f"{name} lung covers {area:.0%} of the image")
    prob = fields.right if side == RIGHT else fields.left
    called = (prob >= 0.5).sum()
    if called and mask.sum() / called < BOUNDS["kept"]:
        reasons.append(f"{name} lung is in pieces")
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
    if hull and mask.sum() / hull < BOUNDS["solidity"]:
        reasons.append(f"{name} lung has no lung shape")
    if prob[mask].mean() < BOUNDS["confidence"]:
        reasons.append(f"{name} lung is uncertain")
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    if ring.any() and image[ring].mean() - image[mask].mean() < BOUNDS["contrast"]:
        reasons.append(f"{name} lung is brighter than its surroundings")
    rows, cols = np.nonzero(mask)
    geometry = {
        "cx": cols.mean() / mask.shape[1],
        "cy": rows.mean() / mask.shape[0],
        "height": np.ptp(rows) + 1,
    }
    return reasons, geometry


def check(fields: LungFields, image: np.ndarray) -> ChestCheck:
    """Whether ``fields`` are a plausible pair of lungs; ``image`` is the film as the network saw it
    ((S, S), normalised to [0, 1])."""
    reasons, geometry = [], {}
    for name, side in (("right", RIGHT), ("left", LEFT)):
        found, geometry[side] = _lung_reasons(name, fields, side, image)
        reasons += found
    if geometry[RIGHT] and geometry[LEFT]:
        right, left = geometry[RIGHT], geometry[LEFT]
        if not right["cx"] < 0.5 < left["cx"]:
            reasons.append("the lungs are not on their own sides")
        low, high = BOUNDS["centre_y"]
        if not all(low <= g["cy"] <= high for g in (right, left)):
            reasons.append("the lungs are not at mid height")
        heights = sorted([right["height"], left["height"]])
        if heights[0] / heights[1] < BOUNDS["height_ratio"]:
            reasons.append("the lungs differ too much in height")
    return ChestCheck(tuple(reasons))
