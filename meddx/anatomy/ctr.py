"""The cardiothoracic ratio (CTR) estimated from the lung fields, and whether the view lets it be read.

Heart width: the widest gap between the two lungs' medial edges over the rows in the lower half of the lungs'
height where each lung is at least `MIN_WIDTH` (40 %) of its own widest row: below that, at the bases, the
lungs taper to their costophrenic angles and the gap between them is the diaphragm's, not the heart's
(without that bound, the hand-drawn masks of the lung-mask set gave a median "CTR" of 0.92; with it, 0.48).
Thorax width: the widest distance between the lungs' outer edges over all rows where both lungs are
present. Both are horizontal, so the film's squashing to a square cancels out. Each width is the
largest of the row widths after a running median over `SMOOTH` rows (a single ragged row does not count).
The ratio is valid only on a PA film: an AP film magnifies the heart, and an unknown view may be AP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meddx.anatomy.fields import LEFT, RIGHT, LungFields
from meddx.explain.regions import view_kind

SMOOTH = 5
MIN_WIDTH = 0.4  # a row counts for the heart only where each lung is this wide, relative to its widest row
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
    """Running median; the output's index i is the median of values[i : i + width]."""
    if values.size < width:
        return values
    return np.median(np.lib.stride_tricks.sliding_window_view(values, width), axis=1)


@dataclass(frozen=True)
class Widths:
    """Heart and thorax widths on the fields' square, with where they were taken (row, x from, x to)."""

    heart: float
    thorax: float
    heart_at: tuple[int, int, int]
    thorax_at: tuple[int, int, int]


def widths(fields: LungFields) -> Widths | None:
    """The heart and thorax widths in the square's pixels, or None when the lungs share too few rows."""
    right, left = fields.lung(RIGHT), fields.lung(LEFT)
    both = right.any(axis=1) & left.any(axis=1)
    rows = np.flatnonzero((right | left).any(axis=1))
    if rows.size == 0 or both.sum() < MIN_ROWS:
        return None
    cols = np.arange(right.shape[1])
    shared = np.flatnonzero(both)
    wide = (right.sum(axis=1) >= MIN_WIDTH * right.sum(axis=1).max()) & (
        left.sum(axis=1) >= MIN_WIDTH * left.sum(axis=1).max()
    )
    lower = np.flatnonzero(both & wide)
    lower = lower[lower >= (rows[0] + rows[-1]) / 2]
    if lower.size < MIN_ROWS:
        return None
    inner = np.array([(cols[right[r]].max(), cols[left[r]].min()) for r in lower], dtype=float)
    outer = np.array([(cols[right[r]].min(), cols[left[r]].max() + 1) for r in shared], dtype=float)

    def widest(spans: np.ndarray, which: np.ndarray) -> tuple[float, tuple[int, int, int]]:
        smooth = _running_median(spans[:, 1] - spans[:, 0])
        i = int(np.argmax(smooth))
        at = min(i + SMOOTH // 2, len(which) - 1) if len(spans) >= SMOOTH else i
        return float(smooth[i]), (int(which[at]), int(spans[at, 0]), int(spans[at, 1]))

    heart, heart_at = widest(inner, lower)
    thorax, thorax_at = widest(outer, shared)
    return Widths(heart, thorax, heart_at, thorax_at)


def estimate(fields: LungFields, view_position: str | None) -> CtrEstimate | None:
    """The CTR estimate, or None when the lung fields give no widths."""
    found = widths(fields)
    if found is None or found.thorax <= 0:
        return None
    words = (view_position or "").upper().split()
    valid = view_kind(view_position) == "frontal" and "PA" in words
    view = view_position.strip() if view_position and view_position.strip() else "unknown"
    return CtrEstimate(heart=max(found.heart, 0.0), thorax=found.thorax, valid_view=valid, view=view)
