"""Measuring a lung-field model on held-out films: Dice, IoU and 95th-percentile Hausdorff per lung.

Predictions are made at the network's size, the logits resized (bilinear) to the mask's 512 px and the
arg-max compared with the hand-drawn mask split into right and left (`anatomy_data.lung_labels`). The
Hausdorff distance is MONAI's ``compute_hausdorff_distance(percentile=95)`` in pixels of the 512 px film.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meddx.train.anatomy_data import LEFT, RIGHT

LUNGS = {"right": RIGHT, "left": LEFT}


@dataclass(frozen=True)
class LungScore:
    """One lung on one film."""

    film: str
    source: str
    lung: str
    dice: float
    iou: float
    hd95: float


def predict_labels(net: torch.nn.Module, x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Labels (0/1/2, uint8) at ``shape`` for a prepared input ``(1, 1, S, S)``."""
    with torch.inference_mode():
        logits = net(x)
        logits = F.interpolate(logits, size=shape, mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def score_film(film: str, source: str, predicted: np.ndarray, truth: np.ndarray) -> list[LungScore]:
    """Dice, IoU and HD95 of each lung."""
    from monai.metrics import compute_hausdorff_distance

    scores = []
    for lung, label in LUNGS.items():
        p, t = predicted == label, truth == label
        inter, total, union = np.logical_and(p, t).sum(), p.sum() + t.sum(), np.logical_or(p, t).sum()
        dice = 2.0 * inter / total if total else 1.0
        iou = inter / union if union else 1.0
        if p.any() and t.any():
            pt = torch.from_numpy(p)[None, None].float()
            tt = torch.from_numpy(t)[None, None].float()
            hd = float(compute_hausdorff_distance(pt, tt, percentile=95.0)[0, 0])
        else:
            hd = float("inf")
        scores.append(LungScore(film, source, lung, float(dice), float(iou), hd))
    return scores


def summarise(scores: Iterable[LungScore]) -> dict:
    """Means (and HD95 medians) per source and lung, per source, and overall."""
    rows = list(scores)
    out: dict = {}

    def stats(items: list[LungScore]) -> dict:
        hd = np.array([s.hd95 for s in items])
        return {
            "films": len({s.film for s in items}),
            "dice": round(float(np.mean([s.dice for s in items])), 4),
            "dice_min": round(float(np.min([s.dice for s in items])), 4),
            "iou": round(float(np.mean([s.iou for s in items])), 4),
            "hd95_mean_px": round(float(np.mean(hd)), 2) if np.isfinite(hd).all() else None,
            "hd95_median_px": round(float(np.median(hd)), 2),
        }

    for source in sorted({s.source for s in rows}):
        for lung in LUNGS:
            out[f"{source}/{lung}"] = stats([s for s in rows if s.source == source and s.lung == lung])
        out[source] = stats([s for s in rows if s.source == source])
    out["all"] = stats(rows)
    return out


def rows(scores: Iterable[LungScore]) -> list[dict]:
    """Per-film rows for a JSON file."""
    return [asdict(s) for s in scores]
