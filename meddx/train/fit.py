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

The metrics, and the threshold rule of step 4, are in `meddx.train.metrics`.
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
from meddx.train.metrics import (
    ECE_RULE,
    THRESHOLD_RULE,
    auroc,
    finding_metrics,
    round_metric,
    youden_threshold,
)
from meddx.train.training_set import TrainingSet

MIN_PER_CLASS = 2
MIN_RELIABLE_POSITIVES = 20
"""Fewest positives on which meddx chooses or trusts an operating threshold: below 20, one image moves the
measured sensitivity by more than 5 points and its 95 % interval is over 25 points wide (Wilson: 18 of 20
is 0.70 to 0.97). ``calibrate`` gives no threshold below it; ``train`` warns when validation has fewer."""
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
        metrics[finding.id]["zero_shot_auroc"] = round_metric(auroc(y, zero_shot[rows, column]))
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
