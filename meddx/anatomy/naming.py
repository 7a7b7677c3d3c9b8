"""Where a box lies relative to the lung fields, in words, in the patient's frame.

A box (film pixels, end-exclusive, on a film of a given size) is mapped onto the fields' square. It is **in
the lungs** when lung pixels cover at least `IN_LUNG` (25 %) of it; then it is named by the lung(s) it
overlaps: a lung counts when it holds at least `SHARE` (20 %) of the box's lung pixels, and two such lungs
give "both lungs". The zone is where the centre of the box's lung pixels lies within that lung's own height,
in thirds (upper, middle, lower); a box whose lung pixels reach over more than two thirds of the lung's
height names no zone ("all zones").

A box that is not in the lungs is **outside the lungs**, with a coarse name, tested in this order from the
box's centre: below the diaphragm (below the lungs' lower edge at that column, interpolated between the
lungs), film edge or marker (lateral to the body, or within `EDGE` of the film's border outside the band
between the lungs), above the lungs, mediastinum/heart (between the lungs), and beside the lungs (chest
wall). On the image the patient's right lung is on the left (frontal film).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meddx.anatomy.fields import LEFT, RIGHT, LungFields

IN_LUNG = 0.25
SHARE = 0.2
EDGE = 0.05
ZONES = ("upper", "middle", "lower")
OUTSIDE = "outside the lungs"


@dataclass(frozen=True)
class Location:
    """A box's location: the words, and whether it lies in the lungs."""

    text: str
    in_lungs: bool


def _square_box(box, height: int, width: int, side: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    sx, sy = side / width, side / height
    a, b = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    return a, b, max(a + 1, int(np.ceil(x1 * sx))), max(b + 1, int(np.ceil(y1 * sy)))


def _zone(lung: np.ndarray, part: np.ndarray) -> str | None:
    """The zone of ``part`` (the box's pixels of this lung), in thirds of the lung's height; None: all."""
    rows = np.flatnonzero(lung.any(axis=1))
    top, height = rows[0], max(rows[-1] + 1 - rows[0], 1)
    part_rows = np.flatnonzero(part.any(axis=1))
    if (part_rows[-1] + 1 - part_rows[0]) / height > 2 / 3:
        return None
    centre = (np.nonzero(part)[0].mean() - top) / height
    return ZONES[min(2, max(0, int(centre * 3)))]


def locate(box, height: int, width: int, fields: LungFields) -> Location:
    """Name ``box`` ``[x0, y0, x1, y1]`` (pixels of a film ``height`` x ``width``) by the lung fields."""
    side = fields.side
    x0, y0, x1, y1 = _square_box(box, height, width, side)
    labels = fields.labels
    window = labels[y0:y1, x0:x1]
    in_lung = np.count_nonzero(window) / max(window.size, 1)
    if in_lung >= IN_LUNG:
        counts = {RIGHT: np.count_nonzero(window == 1), LEFT: np.count_nonzero(window == 2)}
        total = counts[RIGHT] + counts[LEFT]
        sides = [s for s in (RIGHT, LEFT) if counts[s] / total >= SHARE]
        zones = []
        for s in sides:
            part = np.zeros_like(labels, dtype=bool)
            part[y0:y1, x0:x1] = window == (1 if s == RIGHT else 2)
            zones.append(_zone(fields.lung(s), part))
        if len(sides) == 2:
            if zones[0] == zones[1] and zones[0]:
                return Location(f"both lungs, {zones[0]} zones", True)
            return Location("both lungs", True)
        zone = zones[0]
        return Location(f"{sides[0]} lung, {zone} zone" if zone else f"{sides[0]} lung, all zones", True)
    return Location(f"{OUTSIDE}: {_outside((x0 + x1) / 2, (y0 + y1) / 2, (x0, y0, x1, y1), fields)}", False)


def _bottom(mask: np.ndarray) -> np.ndarray:
    """Per column, the row below the lowest lung pixel (-1 where the column has none)."""
    rows = np.arange(mask.shape[0])[:, None]
    return np.where(mask.any(axis=0), (mask * (rows + 1)).max(axis=0), -1)


def _diaphragm(fields: LungFields, x: float) -> float:
    """The lungs' lower edge at column ``x``: under a lung, that column's lowest lung pixel; elsewhere
    (between or beside the lungs), the mean of the two lungs' lowest points in their medial halves."""
    bottom = _bottom(fields.labels > 0)
    col = int(min(max(x, 0), fields.side - 1))
    if bottom[col] >= 0:
        return float(bottom[col])
    lows = []
    for side, medial_is_right_half in ((RIGHT, True), (LEFT, False)):
        mask = fields.lung(side)
        cols = np.flatnonzero(mask.any(axis=0))
        if cols.size == 0:
            return float(bottom.max())
        centre = cols.mean()
        half = mask[:, int(np.ceil(centre)) :] if medial_is_right_half else mask[:, : int(centre) + 1]
        lows.append(float(_bottom(half).max()))
    return float(np.mean(lows))


def _outside(cx: float, cy: float, box: tuple[int, int, int, int], fields: LungFields) -> str:
    side = fields.side
    lungs = fields.labels > 0
    cols, rows = np.flatnonzero(lungs.any(axis=0)), np.flatnonzero(lungs.any(axis=1))
    if cols.size == 0:
        return "no lung fields found"
    lx0, lx1, ly0 = cols[0], cols[-1] + 1, rows[0]
    margin = 0.1 * (lx1 - lx0)
    right_cols = np.flatnonzero(fields.lung(RIGHT).any(axis=0))
    left_cols = np.flatnonzero(fields.lung(LEFT).any(axis=0))
    medial = (right_cols[-1], left_cols[0]) if right_cols.size and left_cols.size else (lx0, lx1)
    between = medial[0] <= cx <= medial[1]
    if lx0 - margin <= cx <= lx1 + margin and cy > _diaphragm(fields, cx):
        return "below the diaphragm"
    edge = EDGE * side
    near_edge = min(box[0], box[1], side - box[2], side - box[3]) < edge
    if cx < lx0 - margin or cx > lx1 + margin or (near_edge and not between):
        return "film edge or marker"
    if cy < ly0:
        return "above the lungs"
    if between:
        return "mediastinum/heart"
    return "beside the lungs (chest wall)"
