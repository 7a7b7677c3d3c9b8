"""Measure a zero-shot calibration (`meddx.model.calibration`) on labelled films.

Per finding, on every labelled image (no split: the data is the measurement), and only when the data has
at least ``min_positives`` positive and ``min_negatives`` negative images
(`meddx.train.sample_size.MIN_PER_CLASS_FOR_CALIBRATION`, 20 of each, by default; the docstring there says
why). A finding with fewer is **not calibrated**: no scaling and no threshold, a note saying so in the output
and the card, and it keeps showing the uncalibrated model score and is never flagged. Otherwise:

1. **Calibrate** with Platt scaling, the method a trained head uses (`meddx.train.fit.fit_platt`): two
   parameters per finding, ``scale > 0`` so the ranking is kept, smoothed targets so separable data keeps
   them finite. Isotonic regression was not chosen: it needs far more positives than a few dozen to be
   stable, gives step-shaped probabilities with ties that blur the ranking, and would make a zero-shot
   calibration behave differently from a trained head's.
2. **Choose an operating threshold** for a target sensitivity (`THRESHOLD_RULE`).
3. **Measure** at that threshold: sensitivity and specificity with Wilson 95 % intervals, the zero-shot
   AUROC, and the expected calibration error before and after.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import torch

from meddx import __version__
from meddx.errors import InputError
from meddx.model.calibration import (
    CALIBRATION_FORMAT,
    CALIBRATION_FORMAT_VERSION,
    calibrated_probability,
    prompts_digest,
    zero_shot_logit,
)
from meddx.model.head import EncoderIdentity
from meddx.model.zero_shot import TextDirections
from meddx.train.datasets import LabelledImages
from meddx.train.fit import fit_platt
from meddx.train.metrics import ECE_RULE, auroc, expected_calibration_error
from meddx.train.sample_size import MIN_PER_CLASS_FOR_CALIBRATION, counted

DEFAULT_SENSITIVITY = 0.9
CALIBRATION_RULE = (
    "Platt scaling per finding on all the labelled images: p = sigmoid(scale * logit(zero-shot p) + bias), "
    "scale > 0, fitted by L-BFGS on Platt's smoothed targets"
)
THRESHOLD_RULE = (
    "per finding, the highest threshold on the calibrated probability that flags at least the target share "
    "of the positive images, placed halfway down to the next lower score; flag when p >= threshold"
)
INTERVAL_RULE = "Wilson score intervals (95 %) for a proportion"
_Z = 1.959964


def wilson_interval(successes: int, total: int) -> list[float] | None:
    """The Wilson 95 % interval of ``successes / total`` (None when ``total`` is 0)."""
    if total == 0:
        return None
    p = successes / total
    denominator = 1 + _Z**2 / total
    centre = (p + _Z**2 / (2 * total)) / denominator
    half = _Z * math.sqrt(p * (1 - p) / total + _Z**2 / (4 * total**2)) / denominator
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def sensitivity_threshold(targets: np.ndarray, probabilities: np.ndarray, sensitivity: float) -> float:
    """`THRESHOLD_RULE`: the highest threshold flagging at least ``sensitivity`` of the positives.

    Raises:
        ValueError: there are no positives.
    """
    targets = np.asarray(targets, bool)
    scores = np.asarray(probabilities, np.float64)
    positives = np.sort(scores[targets])[::-1]
    if not len(positives):
        raise ValueError("a threshold for a sensitivity needs positive images")
    needed = max(1, math.ceil(sensitivity * len(positives) - 1e-9))
    cut = positives[needed - 1]
    lower = scores[scores < cut]
    return float((cut + lower.max()) / 2) if len(lower) else float(cut)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _finding_entry(
    finding,
    targets: np.ndarray,
    zero_shot: np.ndarray,
    sensitivity: float,
    min_positives: int,
    min_negatives: int,
) -> dict:
    positives, negatives = int(targets.sum()), int(len(targets) - targets.sum())
    entry = {
        "label": finding.name,
        "custom": finding.custom,
        "prompts_sha256": prompts_digest(finding),
        "positives": positives,
        "negatives": negatives,
        "scale": None,
        "bias": None,
        "threshold": None,
        "sensitivity": None,
        "sensitivity_ci": None,
        "specificity": None,
        "specificity_ci": None,
        "auroc": _round(auroc(targets, zero_shot)),
        "ece_before": _round(expected_calibration_error(targets, zero_shot)),
        "ece_after": None,
        "note": "",
    }
    if positives < min_positives or negatives < min_negatives:
        entry["note"] = (
            f"not calibrated, no threshold: too few ({counted(positives, negatives)}); calibrating a finding "
            f"needs at least {min_positives} positive and {min_negatives} negative images. It shows the "
            "uncalibrated model score and is never flagged."
        )
        return entry
    scale, bias = fit_platt(zero_shot_logit(zero_shot), targets)
    calibrated = calibrated_probability(zero_shot, scale, bias)
    entry.update(scale=scale, bias=bias, ece_after=_round(expected_calibration_error(targets, calibrated)))
    threshold = sensitivity_threshold(targets, calibrated, sensitivity)
    flagged = calibrated >= threshold
    true_pos, false_pos = int((flagged & targets).sum()), int((flagged & ~targets).sum())
    entry.update(
        threshold=round(threshold, 6),
        sensitivity=_round(true_pos / positives),
        sensitivity_ci=wilson_interval(true_pos, positives),
        specificity=_round(1 - false_pos / negatives),
        specificity_ci=wilson_interval(negatives - false_pos, negatives),
    )
    return entry


def fit_calibration(
    embeddings: torch.Tensor,
    data: LabelledImages,
    directions: TextDirections,
    *,
    identity: EncoderIdentity,
    sensitivity: float = DEFAULT_SENSITIVITY,
    min_positives: int = MIN_PER_CLASS_FOR_CALIBRATION,
    min_negatives: int = MIN_PER_CLASS_FOR_CALIBRATION,
) -> dict:
    """The ``calibration.json`` content for ``data``'s images, embedded as ``embeddings`` (N, D).

    Raises:
        InputError: the sensitivity is not in (0, 1), or ``min_positives`` or ``min_negatives`` is below 1.
    """
    if not 0 < sensitivity < 1:
        raise InputError(f"The sensitivity must be between 0 and 1 (exclusive), got {sensitivity:g}.")
    if min_positives < 1 or min_negatives < 1:
        raise InputError("The minimum numbers of positives and negatives must be at least 1.")
    with torch.no_grad():  # float32, as `meddx.model.scored.score_image` serves it
        zero_shot = torch.sigmoid(directions.logits(embeddings.to(torch.float32))).numpy()
    targets = np.asarray(data.targets, bool)
    findings = {
        finding.id: _finding_entry(
            finding, targets[:, column], zero_shot[:, column], sensitivity, min_positives, min_negatives
        )
        for column, finding in enumerate(data.findings)
    }
    return {
        "format": CALIBRATION_FORMAT,
        "format_version": CALIBRATION_FORMAT_VERSION,
        "encoder": identity.to_dict(),
        "target_sensitivity": sensitivity,
        "min_positives": min_positives,
        "min_negatives": min_negatives,
        "findings": findings,
        "calibration_rule": CALIBRATION_RULE,
        "threshold_rule": THRESHOLD_RULE,
        "interval_rule": INTERVAL_RULE,
        "ece_rule": ECE_RULE,
        "data": {"description": data.description, "images": len(data), "counts": data.counts()},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "meddx_version": __version__,
    }


__all__ = ["DEFAULT_SENSITIVITY", "fit_calibration", "sensitivity_threshold", "wilson_interval"]
