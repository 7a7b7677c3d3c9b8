"""The cardiothoracic ratio (CTR) estimated from the lung fields, and whether the view lets it be read.

Heart width: the widest gap between the two lungs' medial edges over the rows in the lower half of the lungs'
height where both lungs are present. Thorax width: the widest distance between the lungs' outer edges over
all such rows. Both are horizontal, so the film's squashing to a square cancels out. Each width is the
largest of the row widths after a running median over `SMOOTH` rows (a single ragged row does not count).
The ratio is valid only on a PA film: an AP film magnifies the heart, and an unknown view may be AP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meddx.anatomy.fields import LEFT, RIGHT, LungFields
from meddx.explain.regions import view_kind

SMOOTH = 5
MIN_ROWS = 10  # rows with both lungs in the lower half needed to estimate anything
TEXT = (
    "CTR ≈ {ctr:.2f} (estimated from the lung outlines; > 0.5 suggests an enlarged heart on a PA film; "
    "not valid on AP films)"
)
NOT_VALID = (
    "CTR not estimated: the view is {view}, and the ratio is valid only on a PA frontal film "
    "(an AP film magnifies the heart)."
)


@dataclass(frozen=True)
class CtrEstimate:
    """The estimate on the fields' square: widths in its pixels, the ratio, and whether the view allows it."""

    heart: float
    thorax: float
    valid_view: bool
    view: str

    @property
    def ratio(self) -> float:
        return self.heart / self.thorax

    def text(self) -> str:
        """What the surfaces show beside cardiomegaly."""
        return TEXT.format(ctr=self.ratio) if self.valid_view else NOT_VALID.format(view=self.view)

    def to_dict(self) -> dict:
        return {
            "value": round(self.ratio, 3) if self.valid_view else None,
            "valid": self.valid_view,
            "text": self.text(),
        }


def _running_median(values: np.ndarray, width: int = SMOOTH) -> np.ndarray:
    if values.size < width:
        return values
    windows = np.lib.stride_tricks.sliding_window_view(values, width)
    return np.median(windows, axis=1)


def widths(fields: LungFields) -> tuple[float, float] | None:
    """(heart, thorax) widths in the square's pixels, or None when the lungs share too few rows."""
    right, left = fields.lung(RIGHT), fields.lung(LEFT)
    both = right.any(axis=1) & left.any(axis=1)
    rows = np.flatnonzero((right | left).any(axis=1))
    if rows.size == 0 or both.sum() < MIN_ROWS:
        return None
    middle = (rows[0] + rows[-1]) / 2
    cols = np.arange(right.shape[1])
    shared = np.flatnonzero(both)
    lower = shared[shared >= middle]
    if lower.size < MIN_ROWS:
        return None

    def edges(mask: np.ndarray, which: np.ndarray, pick) -> np.ndarray:
        return np.array([pick(cols[mask[r]]) for r in which], dtype=float)

    gap = edges(left, lower, np.min) - edges(right, lower, np.max)
    outer = edges(left, shared, np.max) + 1 - edges(right, shared, np.min)
    return float(_running_median(gap).max()), float(_running_median(outer).max())


def estimate(fields: LungFields, view_position: str | None) -> CtrEstimate | None:
    """The CTR estimate, or None when the lung fields give no widths."""
    found = widths(fields)
    if found is None or found[1] <= 0:
        return None
    words = (view_position or "").upper().split()
    valid = view_kind(view_position) == "frontal" and "PA" in words
    view = view_position.strip() if view_position and view_position.strip() else "unknown"
    return CtrEstimate(heart=max(found[0], 0.0), thorax=found[1], valid_view=valid, view=view)
