"""Paired bootstrap of AUROC: several scores of the *same* images, resampled together.

Comparing two models (``eval --model A --model B``) or two heads (``promote``) on one set of films, each
image's scores travel together: a resample of the images is drawn once (`resample_indices`, seeded) and every
score is measured on it, so the difference between two scores is measured resample by resample (the paired
bootstrap). The interval of the difference is then much narrower than the two separate intervals would
suggest, because what the images share (how hard they are) cancels out.

`PAIRED_RULE` states it; `paired_auroc` computes it. Resamples holding one class only are skipped (AUROC
needs both). Percentile intervals, as `meddx.train.metrics.bootstrap_intervals` draws them: the same seed
gives the same resamples there and here.
"""

from __future__ import annotations

import numpy as np

from meddx.train.metrics import auroc

PAIRED_RULE = (
    "paired bootstrap: the images resampled with replacement (seeded), every score measured on the same "
    "resamples; AUROC of each score and the difference between two, with the 2.5th and 97.5th percentiles "
    "over the resamples as the 95 % interval; resamples with one class only are skipped; a difference is "
    "significant when its interval excludes 0"
)


def resample_indices(size: int, resamples: int, seed: int) -> list[np.ndarray]:
    """``resamples`` bootstrap draws of ``size`` image indices, with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, size, size) for _ in range(resamples)]


def percentile_interval(values: list[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles, rounded to 4 decimals."""
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def paired_auroc(
    targets: np.ndarray,
    scores: dict[str, np.ndarray],
    samples: list[np.ndarray],
    pairs: list[tuple[str, str]],
) -> dict:
    """AUROC of each score and of the differences ``first - second`` for ``pairs``, on the same resamples.

    Args:
        targets: (N,) labels of one finding; both classes must be present.
        scores: name -> (N,) scores of the same images.
        samples: The resamples (`resample_indices`).
        pairs: (first, second) names whose difference is measured.

    Returns:
        ``{"auroc": {name: value}, "ci": {name: [low, high]}, "differences": {(first, second): {"auroc":
        difference, "ci": [low, high], "significant": bool}}}``, values rounded to 4 decimals.

    Raises:
        ValueError: the targets hold one class only.
    """
    y = np.asarray(targets, bool)
    if not 0 < int(y.sum()) < len(y):
        raise ValueError("paired AUROC needs positive and negative images")
    boot: dict[str, list[float]] = {name: [] for name in scores}
    for index in samples:
        if not 0 < int(y[index].sum()) < len(index):
            continue
        for name, values in scores.items():
            boot[name].append(auroc(y[index], values[index]))
    point = {name: auroc(y, values) for name, values in scores.items()}
    differences = {}
    for first, second in pairs:
        interval = percentile_interval(list(np.subtract(boot[first], boot[second])))
        differences[(first, second)] = {
            "auroc": round(point[first] - point[second], 4),
            "ci": interval,
            "significant": interval[0] > 0 or interval[1] < 0,
        }
    return {
        "auroc": {name: round(value, 4) for name, value in point.items()},
        "ci": {name: percentile_interval(values) for name, values in boot.items()},
        "differences": differences,
    }


__all__ = ["PAIRED_RULE", "paired_auroc", "percentile_interval", "resample_indices"]
