"""Train, calibrate and measure a linear head on frozen image embeddings.

The recipe (`train_head`):

1. **Split.** A seeded, stratified validation split (``validation_fraction``, default 20 %): images are
   grouped by their rarest positive label (or "none") and each group is split in proportion, so every
   label has positives and negatives on both sides. Each label needs at least `MIN_PER_CLASS` positives
   and negatives.
2. **Fit.** The head starts from the zero-shot text directions (`LinearHead.from_directions`) and is
   trained with AdamW (decoupled weight decay on the weights, none on the biases) on the binary
   cross-entropy of every finding, with ``pos_weight = negatives / positives`` per finding (training
   split) against class imbalance. Optimisation runs in standardised coordinates (embedding minus its
   training mean, over its training standard deviation, per dimension), which is the same linear model
   with a better-conditioned problem; the weights are mapped back to raw embeddings at the end.
   Early stopping: the epoch with the lowest validation loss (same weighted loss) wins; training stops
   after ``patience`` epochs without improvement. Epoch 0 (the zero-shot head) is a candidate too.
   Seeded and single-process: the same embeddings, data order and seed give bit-identical weights.
3. **Calibrate.** Platt scaling per finding on the validation split: ``sigmoid(a * logit + c)`` with
   ``a > 0`` (so ranking, and AUROC, never change), fitted by L-BFGS on Platt's smoothed targets
   (``(P + 1) / (P + 2)`` and ``1 / (N + 2)``), which keeps ``a`` finite when validation is separable.
   ``pos_weight`` shifts the raw probabilities upwards for rare findings; this undoes it.
4. **Operating thresholds.** Per finding, the threshold on the calibrated probability that maximises
   Youden's J (sensitivity + specificity - 1) on validation, placed halfway between neighbouring
   validation scores; among ties the lowest (most sensitive) threshold. The same rule gives thresholds
   for the "both" mode of `meddx.model.head.combine`.

Validation metrics are measured on the split that also chose the epoch, calibration and thresholds, so
they are optimistic; measure on held-out data with ``python -m meddx eval``.

Metrics (NumPy only): AUROC (Mann-Whitney, ties counted half), AUPRC (average precision, as
scikit-learn), F1, sensitivity and specificity at a threshold (flag when ``p >= threshold``), and the
expected calibration error (`ECE_RULE`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meddx import __version__
from meddx.errors import InputError
from meddx.model.encoder import Encoder
from meddx.model.head import (
    HEAD_FORMAT,
    HEAD_FORMAT_VERSION,
    EncoderIdentity,
    LinearHead,
    TrainedHead,
    combine,
    encoder_identity,
)
from meddx.model.zero_shot import TextDirections, text_directions
from meddx.train.datasets import LabelledImages
from meddx.train.embedding_cache import EmbeddingCache, embed_sources
from meddx.train.training_set import TrainingSet

MIN_PER_CLASS = 2
MIN_RELIABLE_POSITIVES = 20
"""Fewest positives on which meddx chooses or trusts an operating threshold: below 20, one image moves the
measured sensitivity by more than 5 points and its 95 % interval is over 25 points wide (Wilson: 18 of 20
is 0.70 to 0.97). ``calibrate`` gives no threshold below it; ``train`` warns when validation has fewer."""
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
CALIBRATION_RULE = (
    "Platt scaling per finding on the validation split: p = sigmoid(scale * logit + bias), scale > 0, "
    "fitted by L-BFGS on Platt's smoothed targets"
)
LOSS_RULE = "binary cross-entropy per finding with pos_weight = negatives / positives (training split)"


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of `train_head` (defaults suit a few hundred to a few thousand images)."""

    epochs: int = 300
    learning_rate: float = 3e-2
    weight_decay: float = 1e-2
    batch_size: int = 64
    validation_fraction: float = 0.2
    patience: int = 30
    seed: int = 0


# --- metrics --------------------------------------------------------------------------------------------


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


def _round(value: float | None) -> float | None:
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
        "auroc": _round(auroc(targets, probabilities)),
        "auprc": _round(average_precision(targets, probabilities)),
        "threshold": _round(threshold),
        "sensitivity": _round(true_pos / positives) if positives else None,
        "specificity": _round(1 - false_pos / negatives) if negatives else None,
        "f1": _round(2 * true_pos / (positives + true_pos + false_pos)) if positives else None,
        "ece": _round(expected_calibration_error(targets, probabilities)),
    }
    if uncalibrated is not None:
        metrics["ece_uncalibrated"] = _round(expected_calibration_error(targets, uncalibrated))
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


# --- the recipe ----------------------------------------------------------------------------------------


def split_indices(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of image indices into (train, validation), grouped by rarest positive label."""
    if not 0 < fraction < 1:
        raise InputError(f"The validation fraction must be between 0 and 1, got {fraction}.")
    rng = np.random.default_rng(seed)
    prevalence = targets.sum(axis=0)
    rarity = np.where(targets > 0, prevalence[None, :], np.inf)
    groups = np.where(targets.any(axis=1), np.argmin(rarity, axis=1), -1)
    validation = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        take = min(max(round(fraction * len(members)), 1), len(members) - 1) if len(members) > 1 else 0
        validation.extend(members[:take].tolist())
    validation = np.sort(np.array(validation, dtype=int))
    return np.setdiff1d(np.arange(len(targets)), validation), validation


def label_mask(data: LabelledImages | TrainingSet) -> np.ndarray:
    """(N, L) bool: where an image has a label for a finding (all of them, unless the data says otherwise)."""
    mask = getattr(data, "mask", None)
    return np.ones(data.targets.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def _check_split(data: LabelledImages | TrainingSet, train: np.ndarray, validation: np.ndarray) -> None:
    mask = label_mask(data)
    for column, finding in enumerate(data.findings):
        for name, part in (("whole", np.arange(len(data))), ("training", train), ("validation", validation)):
            labelled = part[mask[part, column]]
            positives = int(data.targets[labelled, column].sum())
            negatives = len(labelled) - positives
            need = MIN_PER_CLASS if name == "whole" else 1
            if positives < need or negatives < need:
                raise InputError(
                    f"Label {finding.name!r} has {positives} positive and {negatives} negative images in the "
                    f"{name} data; training needs at least {MIN_PER_CLASS} of each (and one of each in "
                    "both the training and validation splits). Add images or drop the label with --labels."
                )


def _weighted_loss(targets: torch.Tensor, mask: torch.Tensor):
    """`LOSS_RULE` over the labelled entries only: loss(logits, targets, mask) -> mean over labelled."""
    positives = (targets * mask).sum(dim=0)
    pos_weight = (mask.sum(dim=0) - positives) / positives

    def loss(logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        each = nn.functional.binary_cross_entropy_with_logits(
            logits, y, pos_weight=pos_weight, reduction="none"
        )
        return (each * m).sum() / m.sum().clamp_min(1)

    return loss


def _fit(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    init: LinearHead,
    config: TrainingConfig,
    train_m: torch.Tensor,
    val_m: torch.Tensor,
) -> tuple[LinearHead, dict]:
    """AdamW with early stopping, in standardised coordinates (see the module docstring)."""
    mean = train_x.mean(dim=0)
    scale = train_x.std(dim=0, unbiased=False).clamp_min(1e-6)
    z_train, z_val = (train_x - mean) / scale, (val_x - mean) / scale
    weight = nn.Parameter(init.weight.detach() * scale)
    bias = nn.Parameter(init.bias.detach() + init.weight.detach() @ mean)
    loss_fn = _weighted_loss(train_y, train_m)
    optimiser = torch.optim.AdamW(
        [{"params": [weight], "weight_decay": config.weight_decay}, {"params": [bias], "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    generator = torch.Generator().manual_seed(config.seed)

    def validation_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(z_val @ weight.T + bias, val_y, val_m))

    best = (validation_loss(), 0, weight.detach().clone(), bias.detach().clone())
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        for batch in torch.randperm(len(z_train), generator=generator).split(config.batch_size):
            loss = loss_fn(z_train[batch] @ weight.T + bias, train_y[batch], train_m[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        current = validation_loss()
        if current < best[0]:
            best = (current, epoch, weight.detach().clone(), bias.detach().clone())
        elif epoch - best[1] >= config.patience:
            break
    raw_weight = best[2] / scale
    head = LinearHead(raw_weight, best[3] - raw_weight @ mean)
    return head, {"epochs_run": epoch, "best_epoch": best[1], "validation_loss": round(best[0], 6)}


def fit_platt(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Platt scaling for one finding: ``(scale, bias)`` with scale > 0 (see the module docstring)."""
    targets = np.asarray(targets, bool)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    smoothed = torch.tensor(np.where(targets, (positives + 1) / (positives + 2), 1 / (negatives + 2)))
    x = torch.tensor(np.asarray(logits, np.float64))
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_scale, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(log_scale.exp() * x + bias, smoothed)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(np.float32(log_scale.exp().item())), float(np.float32(bias.item()))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_head(
    embeddings: torch.Tensor,
    data: LabelledImages | TrainingSet,
    directions: TextDirections,
    *,
    identity: EncoderIdentity,
    config: TrainingConfig | None = None,
) -> TrainedHead:
    """Split, fit, calibrate and pick thresholds on precomputed embeddings (N, D) of ``data``.

    A `TrainingSet` may leave some findings unlabelled for some images (its ``mask``): the loss,
    ``pos_weight``, calibration, thresholds and metrics then use each finding's labelled images only, and
    its feedback counts go into the head's data description.
    """
    config = config or TrainingConfig()
    mask = label_mask(data)
    labelled_targets = data.targets * mask  # what a mask hides plays no part, not even in the split
    train, validation = split_indices(labelled_targets, config.validation_fraction, config.seed)
    _check_split(data, train, validation)
    targets = torch.tensor(labelled_targets, dtype=torch.float32)
    weights = torch.tensor(mask, dtype=torch.float32)
    linear, history = _fit(
        embeddings[train],
        targets[train],
        embeddings[validation],
        targets[validation],
        LinearHead.from_directions(directions),
        config,
        weights[train],
        weights[validation],
    )
    val_x, val_y = embeddings[validation], data.targets[validation]
    with torch.no_grad():
        raw = linear(val_x).double().numpy()
    zero_shot = torch.sigmoid(directions.logits(val_x)).double().numpy()
    scales, biases, thresholds, both_thresholds, metrics = [], [], {}, {}, {}
    val_mask = mask[validation]
    for column, finding in enumerate(data.findings):
        rows = val_mask[:, column]  # validation images labelled for this finding
        y, logits = val_y[rows, column], raw[rows, column]
        scale, bias = fit_platt(logits, y)
        scales.append(scale)
        biases.append(bias)
        calibrated = _sigmoid(np.float32(scale) * logits + np.float32(bias))
        both = combine(zero_shot[rows, column], calibrated, "both")
        thresholds[finding.id] = youden_threshold(y, calibrated)
        both_thresholds[finding.id] = youden_threshold(y, both)
        metrics[finding.id] = finding_metrics(
            y, calibrated, thresholds[finding.id], uncalibrated=_sigmoid(logits)
        )
        metrics[finding.id]["zero_shot_auroc"] = _round(auroc(y, zero_shot[rows, column]))
    train_positives = (data.targets[train] * mask[train]).sum(axis=0)
    train_labelled = mask[train].sum(axis=0)
    metadata = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        "finding_ids": list(data.labels),
        "labels": [f.name for f in data.findings],
        "encoder": identity.to_dict(),
        "calibration": {"method": "platt", "rule": CALIBRATION_RULE, "scale": scales, "bias": biases},
        "thresholds": {"rule": THRESHOLD_RULE, "fine-tuned": thresholds, "both": both_thresholds},
        "validation": {"images": len(validation), "ece_rule": ECE_RULE, "metrics": metrics},
        "training": {
            **asdict(config),
            **history,
            "optimizer": "AdamW",
            "loss": LOSS_RULE,
            "init": "zero-shot text directions (logit_scale * (positive - negative)), bias 0",
            "pos_weight": {
                f.id: round(float((n - p) / p), 4)
                for f, p, n in zip(
                    data.findings, train_positives.tolist(), train_labelled.tolist(), strict=True
                )
            },
        },
        "data": {
            "description": data.description,
            "images": len(data),
            "counts": data.counts(),
            "split": {"train": len(train), "validation": len(validation)},
            **({"feedback": data.feedback} if getattr(data, "feedback", None) else {}),
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "meddx_version": __version__,
    }
    return TrainedHead(linear, metadata)


def train_head(
    encoder: Encoder,
    data: LabelledImages,
    *,
    config: TrainingConfig | None = None,
    cache: EmbeddingCache | None = None,
    text_cache_dir: Path | None = None,
    progress: bool = False,
) -> TrainedHead:
    """Embed ``data`` with the frozen encoder (cached) and train a calibrated head (see the module docstring).

    ``text_cache_dir`` is where the findings' text directions are cached (`Settings.cache_dir`; None: memory).

    Raises:
        InputError: an image cannot be read, or a label has too few positives or negatives.
    """
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=progress)
    directions = text_directions(encoder, list(data.findings), cache_dir=text_cache_dir)
    return fit_head(embeddings, data, directions, identity=encoder_identity(encoder), config=config)
