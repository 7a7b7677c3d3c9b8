"""Regions of an attribution map: boxes on the original film, each with a score and its location in words.

A map on the film (`meddx.explain.overlay.FilmMap.on_film`: float, original image size, [0, 1], positive
evidence only) is thresholded, split into connected components (OpenCV, 8-connectivity), and each component
becomes a box ``[x0, y0, x1, y1]`` in original pixels, end-exclusive (PIL's crop-box convention). Tiny
components are dropped, boxes that overlap or nearly touch are merged, and the strongest ``max_regions``
are kept.

- Threshold: by default Otsu's threshold on the map's non-zero values (quantised to 256 levels); when those
  values do not have two distinct levels, the 90th percentile of them. ``percentile=`` overrides Otsu.
- Score: the **peak** map value inside the region (in [0, 1], 1 = the map's strongest evidence), so a
  small intense region outranks a large faint one; merged boxes keep the higher peak.

Location words use the **patient's** frame. On a frontal film (PA or AP, displayed in the usual way) the
patient's right is on the viewer's left. On a lateral film there is no left or right to tell, so the words
give the zone and say "on the lateral view". When the view position is unknown a frontal film is assumed:
`location_note` returns the sentence to show once per study.

**Named by the lungs** when the caller passes ``lungs`` (`meddx.anatomy.reading.Anatomy`, the lung-field
model's output, with a plausible pair of lungs on a frontal film): each box is then "right lung, lower zone",
"both lungs", ... or "outside the lungs: below the diaphragm" (`meddx.anatomy.naming`), and the region says
whether it lies in the lungs (``in_lungs``). A region outside the lungs is never a lung finding's location.

Otherwise (no lung fields: a lateral film, or no plausible lungs found) the lung field is approximated
geometrically: by default it is the whole image (the film as uploaded, without the model's padding), or a
``field`` box the caller gives, and ``in_lungs`` is None. Zones are thirds of its
height (upper, middle, lower), with "apical" for the top 15% and "basal" for the bottom 15%
("costophrenic angle" in its outer quarters); a box whose centre lies in the middle third of the width is
"central" ("central (perihilar)" in the middle zone); a box reaching into both outer thirds is
"bilateral". These are approximations for orientation, not anatomy.

A box that covers most of the field says nothing about a zone, and naming its centre ("bilateral middle
zones" for the whole film) would be misleading, so it is called **diffuse**: when its area is at least
`DIFFUSE_AREA` (60 %) of the field's, or when it reaches every zone: into the upper and the lower thirds
of the field's height and into both outer thirds of its width (on a frontal film: both lungs, all six
zones). At 60 % of the area a box must span at least 60 % of each side, so its centre lies in the middle
40 % of the field and a zone named from it would be a coin toss between neighbours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

FRONTAL = "frontal"
LATERAL = "lateral"
UNKNOWN = "unknown"
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT"})
UNKNOWN_VIEW_NOTE = (
    "View position unknown: assumed a frontal (PA/AP) film, so the patient's right is on the image's left."
)
APICAL = 0.15  # top fraction of the field called apical
BASAL = 0.85  # below this fraction of the field's height: basal
OUTER = 0.25  # outer fraction of the width, on each side, where a basal region is at the costophrenic angle
FALLBACK_PERCENTILE = 90.0
DIFFUSE_AREA = 0.6  # a box covering at least this fraction of the field is diffuse, not in a zone


@dataclass(frozen=True)
class Region:
    """One region of a map: ``box`` is ``[x0, y0, x1, y1]`` in original pixels, end-exclusive."""

    box: list[int]
    score: float
    location: str
    in_lungs: bool | None = None
    """True/False when named by the lung fields; None when located by the film's frame only."""

    def to_dict(self) -> dict:
        """JSON-safe: ``{"box": [...], "location": "...", "in_lungs": ..., "score": ...}``."""
        return {
            "box": [int(v) for v in self.box],
            "location": self.location,
            "in_lungs": self.in_lungs,
            "score": round(float(self.score), 4),
        }


class LungLocator(Protocol):
    """Names a box by the lung fields (`meddx.anatomy.reading.Anatomy`); None when it has no lungs."""

    def locate(self, box, height: int, width: int): ...


def view_kind(view_position: str | None) -> str:
    """The kind of a DICOM view position: ``"frontal"``, ``"lateral"`` or ``"unknown"``.

    Frontal: PA, AP; lateral: LL, RL, LATERAL, LAT. The value is split into words, so "AP SUPINE" is
    frontal; anything unrecognised is unknown.
    """
    words = set(re.split(r"[^A-Z]+", (view_position or "").upper()))
    if words & LATERAL_VIEWS:
        return LATERAL
    if words & FRONTAL_VIEWS:
        return FRONTAL
    return UNKNOWN


def location_note(view_position: str | None) -> str | None:
    """The sentence to show once per study when a frontal film had to be assumed, else None."""
    return UNKNOWN_VIEW_NOTE if view_kind(view_position) == UNKNOWN else None


def threshold(heatmap: np.ndarray, *, percentile: float | None = None) -> float | None:
    """The map value above which pixels belong to a region; None when the map has no positive value.

    Otsu's threshold on the non-zero values (256 levels), or their ``percentile`` when given (or when Otsu
    is undefined: fewer than two distinct levels). A pixel is in a region when its value is >= the result.
    """
    values = heatmap[heatmap > 0]
    if values.size == 0:
        return None
    levels = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    if percentile is None and np.unique(levels).size >= 2:
        otsu, _ = cv2.threshold(levels.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return (otsu + 0.5) / 255.0  # the levels above Otsu's threshold
    return float(np.percentile(values, FALLBACK_PERCENTILE if percentile is None else percentile))


def find_regions(
    heatmap: np.ndarray,
    *,
    view_position: str | None = None,
    percentile: float | None = None,
    max_regions: int = 3,
    min_area: float = 0.001,
    merge_gap: float = 0.02,
    field: tuple[int, int, int, int] | None = None,
    lungs: LungLocator | None = None,
) -> list[Region]:
    """The strongest regions of a map, best first.

    Args:
        heatmap: a map on the original film, (H, W) in [0, 1].
        view_position: the DICOM view position ("PA", "AP", "LL", ...) or None (a frontal film is assumed;
            show `location_note` once).
        percentile: threshold at this percentile of the non-zero values instead of Otsu.
        max_regions: the most regions returned.
        min_area: drop components smaller than this fraction of the image's area.
        merge_gap: merge boxes closer than this fraction of the image's longer side.
        field: the box (x0, y0, x1, y1) taken as the lung field for the location words; default the image.
        lungs: the lung fields, to name regions by (ignored on a lateral film); ``field`` is then unused.
    """
    cut = threshold(heatmap, percentile=percentile)
    if cut is None:
        return []
    height, width = heatmap.shape
    mask = ((heatmap >= cut) & (heatmap > 0)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area * height * width]
    boxes = [(_component_box(stats[i]), _peak(heatmap, labels, i, stats[i])) for i in keep]
    merged = _merge(boxes, gap=merge_gap * max(height, width))
    merged.sort(key=lambda item: (-item[1], -_area(item[0])))
    field = field or (0, 0, width, height)
    regions = []
    for box, score in merged[:max_regions]:
        found = lungs.locate(box, height, width) if lungs and view_kind(view_position) != LATERAL else None
        if found is None:
            regions.append(
                Region(list(box), score, describe_location(box, field, view_position=view_position))
            )
        else:
            regions.append(Region(list(box), score, found.text, found.in_lungs))
    return regions


def _peak(heatmap: np.ndarray, labels: np.ndarray, label: int, stat: np.ndarray) -> float:
    """The map's maximum over one component, looked up inside the component's bounding box only."""
    x0, y0, x1, y1 = _component_box(stat)
    window = heatmap[y0:y1, x0:x1]
    return float(window[labels[y0:y1, x0:x1] == label].max())


def _component_box(stat: np.ndarray) -> tuple[int, int, int, int]:
    x, y = int(stat[cv2.CC_STAT_LEFT]), int(stat[cv2.CC_STAT_TOP])
    return x, y, x + int(stat[cv2.CC_STAT_WIDTH]), y + int(stat[cv2.CC_STAT_HEIGHT])


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: float) -> bool:
    """Whether two boxes overlap or are at most ``gap`` pixels apart along both axes."""
    dx = max(a[0], b[0]) - min(a[2], b[2])
    dy = max(a[1], b[1]) - min(a[3], b[3])
    return dx <= gap and dy <= gap


def _merge(boxes: list[tuple[tuple[int, int, int, int], float]], *, gap: float) -> list:
    """Union boxes that overlap or nearly touch, until none do; a merged box keeps the higher score."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                (a, score_a), (b, score_b) = boxes[i], boxes[j]
                if _near(a, b, gap):
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    boxes[i] = (union, max(score_a, score_b))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def describe_location(
    box: tuple[int, int, int, int] | list[int],
    field: tuple[int, int, int, int],
    *,
    view_position: str | None = None,
) -> str:
    """Where a box lies, in words, in the patient's frame: e.g. "right upper zone", "central (perihilar)";
    "diffuse (both lungs)" for a box that covers most of the field (see the module's note).

    Args:
        box: ``[x0, y0, x1, y1]`` in image pixels, end-exclusive.
        field: the box approximating the lung field (usually the whole image).
        view_position: the DICOM view position; unknown means a frontal film is assumed.
    """
    fx0, fy0, fx1, fy1 = field
    fw, fh = max(fx1 - fx0, 1), max(fy1 - fy0, 1)
    left, right = (box[0] - fx0) / fw, (box[2] - fx0) / fw
    across = (left + right) / 2
    down = ((box[1] + box[3]) / 2 - fy0) / fh
    zone = "upper" if down < 1 / 3 else "middle" if down < 2 / 3 else "lower"
    lateral = view_kind(view_position) == LATERAL
    top, bottom = (box[1] - fy0) / fh, (box[3] - fy0) / fh
    all_zones = top < 1 / 3 and bottom > 2 / 3 and left < 1 / 3 and right > 2 / 3
    if all_zones or (right - left) * (bottom - top) >= DIFFUSE_AREA:
        return "diffuse on the lateral view" if lateral else "diffuse (both lungs)"
    qualifier = _qualifier(0.5 if lateral else across, down)  # no costophrenic words on a lateral film
    suffix = f" ({qualifier})" if qualifier else ""
    if lateral:
        return f"{zone} zone{suffix} on the lateral view"
    if left < 1 / 3 and right > 2 / 3:
        return f"bilateral {zone} zones{suffix}"
    if 1 / 3 <= across <= 2 / 3:
        return "central (perihilar)" if zone == "middle" else f"central {zone} zone{suffix}"
    side = "right" if across < 1 / 3 else "left"  # the patient's right is on the viewer's left
    return f"{side} {zone} zone{suffix}"


def _qualifier(across: float, down: float) -> str:
    if down < APICAL:
        return "apical"
    if down > BASAL:
        return "costophrenic angle" if across < OUTER or across > 1 - OUTER else "basal"
    return ""
