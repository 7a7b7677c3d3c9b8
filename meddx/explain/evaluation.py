"""How well maps and regions find expert boxes, with floors: the metrics of ``python -m meddx explain-eval``.

Everything is measured on an **evaluation grid**: the film shrunk so that its longer side is at most
`EVAL_SIDE` pixels (`meddx.explain.overlay.FilmMap.on_film` with ``max_side``); boxes and regions are scaled
onto it, a box covering every grid pixel it touches. One *case* is one finding on one film; its boxes
are all that finding's boxes on that film (their union). Per case:

- **pointing**: 1 when the map's maximum lies in a box (the first maximum in row-major order), else 0;
  an all-zero map scores 0.
- **energy in box**: the share of the map's (positive) sum that lies inside the boxes; 0 for an all-zero map.
- **region hit**: 1 when one of the regions (`meddx.explain.regions.find_regions`) has an IoU of at least
  `HIT_IOU` (0.1, the loosest threshold of Wang et al., 2017, ChestX-ray8) with one of the boxes.
- **region IoU**: intersection over union of the union of the regions and the union of the boxes.
- **box share** (for reading the others): the share of the film the boxes cover; a map that knows
  nothing points into a box about this often and puts about this share of its energy there.

Floors, computed on the same cases with the same metrics:

- **centre prior**: a Gaussian centred on the film, sigma a quarter of its width and of its height
  (`CENTRE_SIGMA`): what "look at the middle of the chest" scores.
- **random**: uniform noise on the model's patch grid, put on the film exactly as a Grad-CAM map is
  (bilinear, padding cropped); seeded.

Each mean comes with a bootstrap 95 % interval: `BOOTSTRAP` resamples of the cases with replacement
(percentile interval, seeded; the same resamples for every method of a finding, so rows compare fairly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meddx.explain.overlay import FilmMap
from meddx.explain.regions import find_regions
from meddx.model.geometry import Geometry

EVAL_SIDE = 512
HIT_IOU = 0.1
CENTRE_SIGMA = 0.25
BOOTSTRAP = 1000
CENTRE_PRIOR = "centre_prior"
RANDOM = "random"
BASELINES = (CENTRE_PRIOR, RANDOM)
METRICS = ("pointing", "energy", "region_hit", "region_iou")
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Case:
    """One finding on one film, on the evaluation grid: the map, the expert boxes and the map's regions.

    Boxes and regions are pixel rectangles ``(x0, y0, x1, y1)``, end-exclusive, on ``heatmap``'s grid.
    """

    heatmap: np.ndarray
    boxes: tuple[Rect, ...]
    regions: tuple[Rect, ...]


def _mask(shape: tuple[int, int], rects: Sequence[Rect]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = True
    return mask


def _iou(a: Rect, b: Rect) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def case_scores(case: Case) -> dict[str, float]:
    """The metrics of one case (module docstring), and its box share."""
    heatmap = case.heatmap
    boxes = _mask(heatmap.shape, case.boxes)
    regions = _mask(heatmap.shape, case.regions)
    total = float(heatmap.sum())
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    union = float((boxes | regions).sum())
    return {
        "pointing": float(heatmap.max() > 0 and boxes[peak]),
        "energy": float(heatmap[boxes].sum()) / total if total > 0 else 0.0,
        "region_hit": float(any(_iou(r, b) >= HIT_IOU for r in case.regions for b in case.boxes)),
        "region_iou": float((boxes & regions).sum()) / union if union > 0 else 0.0,
        "box_share": float(boxes.mean()),
    }


def centre_prior(shape: tuple[int, int]) -> np.ndarray:
    """The centre-prior map on a (height, width) grid: a Gaussian at the centre, peak 1."""
    height, width = shape
    y = (np.arange(height) + 0.5 - height / 2) / (CENTRE_SIGMA * height)
    x = (np.arange(width) + 0.5 - width / 2) / (CENTRE_SIGMA * width)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def random_map(geometry: Geometry, grid: int, rng: np.random.Generator, *, max_side: int) -> np.ndarray:
    """Uniform noise on the model's ``grid`` x ``grid`` patches, put on the film as a map is."""
    square = rng.random((grid, grid)).astype(np.float32)
    return FilmMap(square / square.max(), geometry).on_film(max_side=max_side)


def baseline_case(name: str, like: Case, geometry: Geometry, grid: int, rng: np.random.Generator) -> Case:
    """The ``centre_prior`` or ``random`` floor for a case, with regions found as the pipeline finds them."""
    shape = like.heatmap.shape
    if name == CENTRE_PRIOR:
        heatmap = centre_prior(shape)
    else:
        heatmap = random_map(geometry, grid, rng, max_side=max(shape))
        heatmap = heatmap[: shape[0], : shape[1]]
    regions = tuple(tuple(r.box) for r in find_regions(heatmap))
    return Case(heatmap, like.boxes, regions)


def bootstrap_interval(values: np.ndarray, resamples: np.ndarray) -> tuple[float, float, float]:
    """The mean and the 2.5th and 97.5th percentiles of the means over ``resamples`` (index rows)."""
    means = values[resamples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


@dataclass(frozen=True)
class Summary:
    """A row of the table: finding, method (or floor), number of cases, each metric's mean and 95 % CI."""

    finding: str
    method: str
    cases: int
    box_share: float
    metrics: dict[str, tuple[float, float, float]]

    def to_dict(self) -> dict:
        return {
            "finding": self.finding,
            "method": self.method,
            "cases": self.cases,
            "box_share": round(self.box_share, 4),
            **{
                name: {"mean": round(m, 4), "ci95": [round(lo, 4), round(hi, 4)]}
                for name, (m, lo, hi) in self.metrics.items()
            },
        }


def summarise(cases: dict[str, dict[str, list[Case]]], *, seed: int = 0) -> list[Summary]:
    """Rows for ``cases[finding][method]`` (every method of a finding over the same films, in order)."""
    rows = []
    for finding in sorted(cases):
        by_method = cases[finding]
        count = len(next(iter(by_method.values())))
        resamples = np.random.default_rng(seed).integers(0, count, size=(BOOTSTRAP, count))
        for method, method_cases in by_method.items():
            scores = [case_scores(c) for c in method_cases]
            metrics = {
                name: bootstrap_interval(np.array([s[name] for s in scores]), resamples) for name in METRICS
            }
            share = float(np.mean([s["box_share"] for s in scores]))
            rows.append(Summary(finding, method, count, share, metrics))
    return rows


def format_table(rows: Sequence[Summary]) -> str:
    """The rows as plain text: mean [95 % CI] per metric; floors are the centre_prior and random rows."""
    header = f"{'finding':<14}{'method':<22}{'films':>6}{'box':>6}" + "".join(
        f"{name:>20}" for name in ("pointing", "energy in box", "region hit", "region IoU")
    )
    lines = [header]
    for row in rows:
        cells = "".join(
            f"{f'{m:.2f} [{lo:.2f}, {hi:.2f}]':>20}" for m, lo, hi in (row.metrics[n] for n in METRICS)
        )
        lines.append(f"{row.finding:<14}{row.method:<22}{row.cases:>6}{row.box_share:>6.2f}{cells}")
    return "\n".join(lines)
