"""Metrics of a finding's scores against its labels, and the operating threshold they choose (NumPy only).

AUROC (Mann-Whitney, ties counted half), AUPRC (average precision, as scikit-learn), F1, sensitivity and
specificity at a threshold (flag when ``p >= threshold``), the expected calibration error (`ECE_RULE`) and
its reliability bins, the ROC curve, the operating threshold of `THRESHOLD_RULE` (`youden_threshold`), and
bootstrap intervals of the metrics (`BOOTSTRAP_RULE`). Training (`meddx.train.fit`), evaluation, calibration
and promotion all measure with these.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 10
ECE_RULE = (
    "expected calibration error over 10 equal-width bins of the predicted probability of the finding "
    "([0, 0.1), ..., [0.9, 1.0]): sum over bins of (images in bin / all images) * |mean predicted "
    "probability - fraction positive|"
)
THRESHOLD_RULE = (
    "per finding, maximise Youden's J (sensitivity + specificity - 1) on the validation split; threshold "
    "halfway between neighbouring validation scores; ties go to the lowest threshold; flag when "
    "p >= threshold"
)


def _both_classes(targets: np.ndarray) -> bool:
    return 0 < int(targets.sum()) < len(targets)


def auroc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (None unless both classes are present)."""
    targets = np.asarray(targets, bool)
    if not _both_classes(targets):
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    positives, negatives = int(targets.sum()), int((~targets).sum())
    return float((ranks[targets].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _cumulative(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and true/false positives when flagging at each."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    sorted_scores, sorted_targets = np.asarray(scores, float)[order], np.asarray(targets, bool)[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    true_pos = np.cumsum(sorted_targets)[last]
    return sorted_scores[last], true_pos, last + 1 - true_pos


def roc_curve(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates, from (0, 0) to (1, 1)."""
    targets = np.asarray(targets, bool)
    _, true_pos, false_pos = _cumulative(targets, scores)
    return (
        np.r_[0.0, false_pos / max(int((~targets).sum()), 1)],
        np.r_[0.0, true_pos / max(int(targets.sum()), 1)],
    )


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the precision-recall curve as average precision (None without positives)."""
    targets = np.asarray(targets, bool)
    if not _both_classes(targets):
        return None
    _, true_pos, false_pos = _cumulative(targets, scores)
    recall = true_pos / targets.sum()
    precision = true_pos / (true_pos + false_pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(targets: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error (`ECE_RULE`)."""
    counts, predicted, observed = reliability(targets, probabilities, bins)
    used = counts > 0
    return float(np.sum(counts[used] / counts.sum() * np.abs(predicted[used] - observed[used])))


def reliability(
    targets: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: image count, mean predicted probability, fraction positive (NaN when empty)."""
    probabilities = np.asarray(probabilities, float)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, probabilities, bins) / counts
        observed = np.bincount(index, np.asarray(targets, float), bins) / counts
    return counts, predicted, observed


def youden_threshold(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """The operating threshold of `THRESHOLD_RULE` (0.5 when the scores cannot separate anything)."""
    targets = np.asarray(targets, bool)
    scores, true_pos, false_pos = _cumulative(targets, probabilities)
    if len(scores) < 2 or not _both_classes(targets):
        return 0.5
    youden = true_pos[:-1] / targets.sum() - false_pos[:-1] / (~targets).sum()
    best = len(youden) - 1 - int(np.argmax(youden[::-1]))
    return float((scores[best] + scores[best + 1]) / 2)


def round_metric(value: float | None) -> float | None:
    """A metric as reports store it: 4 decimals (None stays None)."""
    return None if value is None else round(float(value), 4)


def finding_metrics(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    *,
    uncalibrated: np.ndarray | None = None,
) -> dict:
    """AUROC, AUPRC, sensitivity, specificity and F1 at the threshold, ECE; counts. JSON-safe."""
    targets = np.asarray(targets, bool)
    flagged = np.asarray(probabilities) >= threshold
    true_pos = int((flagged & targets).sum())
    positives, negatives = int(targets.sum()), int((~targets).sum())
    false_pos = int((flagged & ~targets).sum())
    metrics = {
        "positives": positives,
        "negatives": negatives,
        "auroc": round_metric(auroc(targets, probabilities)),
        "auprc": round_metric(average_precision(targets, probabilities)),
        "threshold": round_metric(threshold),
        "sensitivity": round_metric(true_pos / positives) if positives else None,
        "specificity": round_metric(1 - false_pos / negatives) if negatives else None,
        "f1": round_metric(2 * true_pos / (positives + true_pos + false_pos)) if positives else None,
        "ece": round_metric(expected_calibration_error(targets, probabilities)),
    }
    if uncalibrated is not None:
        metrics["ece_uncalibrated"] = round_metric(expected_calibration_error(targets, uncalibrated))
    return metrics


BOOTSTRAP_RULE = (
    "95 % bootstrap intervals: images resampled with replacement (seeded), the 2.5th and 97.5th percentiles "
    "of each metric over the resamples; resamples with one class only are skipped for the metrics that need "
    "both"
)
INTERVAL_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "f1", "ece")


def bootstrap_intervals(
    targets: np.ndarray, probabilities: np.ndarray, threshold: float, *, resamples: int = 1000, seed: int = 0
) -> dict[str, list[float] | None]:
    """`BOOTSTRAP_RULE` intervals of `finding_metrics`' metrics at ``threshold`` (None: never defined)."""
    targets, probabilities = np.asarray(targets, bool), np.asarray(probabilities, float)
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in INTERVAL_METRICS}
    for _ in range(resamples):
        pick = rng.integers(0, len(targets), len(targets))
        metrics = finding_metrics(targets[pick], probabilities[pick], threshold)
        for name in INTERVAL_METRICS:
            if metrics[name] is not None:
                values[name].append(metrics[name])
    return {
        name: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)] if v else None
        for name, v in values.items()
    }
