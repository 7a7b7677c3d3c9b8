"""One training set from several ``--data`` specs: labelled films and clinician feedback, side by side.

Labelled sets (`meddx.train.datasets`) are embedded with the frozen encoder (cached); feedback
(`meddx.train.feedback`) already holds each film's embedding, so no film is needed. Each image has a label
only for some findings: a labelled set labels its own findings (positive or negative), a feedback record
labels the findings the clinician answered (``present`` and ``missed`` are positive, ``absent`` negative,
``not sure`` and unanswered findings are not labels). Training uses only labelled entries (`mask`).

Feedback embeddings must come from the very encoder being trained on (same model, same revision, same
size): records scored by another model or revision are refused with a message naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from meddx.errors import InputError
from meddx.model.encoder import Encoder
from meddx.model.head import EncoderIdentity, encoder_identity
from meddx.model.vocabulary import Finding, load_vocabulary
from meddx.train.datasets import LabelledImages, load_data
from meddx.train.embedding_cache import EmbeddingCache, embed_sources
from meddx.train.feedback import FeedbackData, is_feedback_spec, load_feedback

FEEDBACK_TARGETS = {"present": 1, "missed": 1, "absent": 0}
"""How a clinician's answer becomes a training target ("not sure" is no label)."""


@dataclass(frozen=True)
class TrainingSet:
    """Embedded images with a target per finding where they have a label.

    Attributes:
        description: The sources, safe to store with a head (kinds and Hub ids, never local paths).
        findings: The findings, in column order.
        targets: (N, L) uint8, 1 for positive (0 where unlabelled).
        mask: (N, L) bool, True where the image has a label for the finding.
        feedback: For the head card: feedback records used and their answers per finding and label.
        dropped: Findings left out because feedback alone gave too few labels, with the reason.
    """

    description: str
    findings: tuple[Finding, ...]
    targets: np.ndarray
    mask: np.ndarray
    feedback: dict | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """The finding ids, in column order."""
        return tuple(f.id for f in self.findings)

    def __len__(self) -> int:
        return len(self.targets)

    def counts(self) -> dict[str, dict[str, int]]:
        """Labelled positives and negatives per finding id."""
        positives = (self.targets * self.mask).sum(axis=0).tolist()
        labelled = self.mask.sum(axis=0).tolist()
        return {
            f.id: {"positive": int(p), "negative": int(n - p)}
            for f, p, n in zip(self.findings, positives, labelled, strict=True)
        }

    def columns(self, keep: list[int]) -> TrainingSet:
        """Only these finding columns; images left with no label at all are kept (they weigh nothing)."""
        return TrainingSet(
            self.description,
            tuple(self.findings[c] for c in keep),
            self.targets[:, keep],
            self.mask[:, keep],
            self.feedback,
            dict(self.dropped),
        )


def check_feedback_encoder(feedback: FeedbackData, identity: EncoderIdentity) -> None:
    """Refuse feedback whose embeddings came from another model, revision or embedding size.

    Raises:
        InputError: naming the records' model and revision, the encoder's, and the fix.
    """
    others: dict[str, int] = {}
    for record in feedback.records:
        model = record["model"]
        same_key = EncoderIdentity(**model).key == identity.key
        if not same_key or model["embed_dim"] != identity.embed_dim:
            name = f"{model['model']}@{model['revision']} ({model['spec']})"
            others[name] = others.get(name, 0) + 1
    if others:
        listed = "; ".join(f"{count} scored by {name}" for name, count in others.items())
        raise InputError(
            f"{sum(others.values())} of {len(feedback)} records in the {feedback.description} were scored by "
            f"another model or revision ({listed}); this training uses {identity.model}@{identity.revision}. "
            "Embeddings of different weights are not comparable, so they cannot train one head. Train with "
            "--model set to their model, or move those records out of the data."
        )


def _feedback_rows(feedback: FeedbackData, columns: dict[str, int], width: int) -> tuple:
    targets = np.zeros((len(feedback), width), dtype=np.uint8)
    mask = np.zeros((len(feedback), width), dtype=bool)
    for row, record in enumerate(feedback.records):
        answers = dict(record["labels"]) | dict.fromkeys(record["missed"], "missed")
        for finding_id, answer in answers.items():
            if answer in FEEDBACK_TARGETS:
                targets[row, columns[finding_id]] = FEEDBACK_TARGETS[answer]
                mask[row, columns[finding_id]] = True
    embeddings = torch.tensor([record["embedding"] for record in feedback.records], dtype=torch.float32)
    return embeddings, targets, mask


def _feedback_summary(sources: list[FeedbackData]) -> dict | None:
    if not sources:
        return None
    counts: dict[str, dict[str, int]] = {}
    for source in sources:
        for finding_id, per_label in source.counts().items():
            merged = counts.setdefault(finding_id, dict.fromkeys(per_label, 0))
            for label, count in per_label.items():
                merged[label] += count
    return {
        "records": sum(len(s) for s in sources),
        "sources": [s.description for s in sources],
        "counts": dict(sorted(counts.items())),
    }


def read_sources(specs: list[str]) -> list[LabelledImages | FeedbackData]:
    """Read every ``--data`` spec (labelled or feedback) without embedding anything.

    Raises:
        InputError: a spec cannot be read.
    """
    return [load_feedback(spec) if is_feedback_spec(spec) else load_data(spec) for spec in specs]


def build_training_set(
    encoder: Encoder,
    sources: list[LabelledImages | FeedbackData],
    *,
    labels: list[str] | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[torch.Tensor, TrainingSet]:
    """Embed labelled films, check and add feedback; return (embeddings (N, D), the training set).

    Args:
        encoder: The frozen encoder the head is trained on.
        sources: What `read_sources` read: labelled sets (`meddx.train.datasets`) and feedback
            (``feedback:DIR``, ``hf-dataset:owner/name``).
        labels: Keep only these findings (names, ids or synonyms); None keeps all.
        cache: The image-embedding cache for labelled films.
        validation_fraction, seed: The split training will use (`meddx.train.fit.TrainingConfig`): findings
            labelled only by feedback that cannot be split with both classes on each side are left out
            (listed in ``dropped``).

    Raises:
        InputError: feedback comes from another model or revision, or a requested label is in none of the
            data.
    """
    identity = encoder_identity(encoder)
    labelled = [s for s in sources if isinstance(s, LabelledImages)]
    feedback = [s for s in sources if isinstance(s, FeedbackData)]
    for source in feedback:
        check_feedback_encoder(source, identity)
    vocabulary = load_vocabulary()
    findings: dict[str, Finding] = {}
    for data in labelled:
        for finding in data.findings:
            findings.setdefault(finding.id, finding)
    for source in feedback:
        for finding_id in source.counts():
            findings.setdefault(finding_id, vocabulary.lookup(finding_id))
    columns = {finding_id: i for i, finding_id in enumerate(findings)}
    width = len(columns)
    parts_x, parts_y, parts_m = [], [], []
    for data in labelled:
        targets = np.zeros((len(data), width), dtype=np.uint8)
        mask = np.zeros((len(data), width), dtype=bool)
        for column, finding_id in enumerate(data.labels):
            targets[:, columns[finding_id]] = data.targets[:, column]
            mask[:, columns[finding_id]] = True
        parts_x.append(embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=progress))
        parts_y.append(targets)
        parts_m.append(mask)
    for source in feedback:
        x, y, m = _feedback_rows(source, columns, width)
        parts_x.append(x)
        parts_y.append(y)
        parts_m.append(m)
    descriptions = [d.description for d in labelled] + [
        f"{s.description} ({len(s)} records)" for s in feedback
    ]
    result = TrainingSet(
        description=" + ".join(descriptions),
        findings=tuple(findings.values()),
        targets=np.concatenate(parts_y),
        mask=np.concatenate(parts_m),
        feedback=_feedback_summary(feedback),
    )
    if labels:
        keep = []
        for label in labels:
            finding = vocabulary.lookup(label) or vocabulary.custom(label)
            if finding.id not in columns:
                raise InputError(
                    f"Label {label!r} is not in the data; it has: {', '.join(result.labels) or 'none'}."
                )
            keep.append(columns[finding.id])
        result = result.columns(list(dict.fromkeys(keep)))
    labelled_ids = {finding_id for data in labelled for finding_id in data.labels}
    return torch.cat(parts_x), _drop_thin_feedback(result, labelled_ids, validation_fraction, seed)


def _thin(data: TrainingSet, column: int, parts: dict[str, np.ndarray]) -> str | None:
    """Why a finding cannot be trained on with this split (too few positives or negatives), or None."""
    from meddx.train.fit import MIN_PER_CLASS

    for name, part in parts.items():
        labelled = part[data.mask[part, column]]
        positives = int(data.targets[labelled, column].sum())
        negatives = len(labelled) - positives
        need = MIN_PER_CLASS if name == "whole" else 1
        if positives < need or negatives < need:
            return f"{positives} positive and {negatives} negative labels in the {name} data"
    return None


def _drop_thin_feedback(data: TrainingSet, protected: set[str], fraction: float, seed: int) -> TrainingSet:
    """Leave out findings that only feedback labels and that have too few labels to train and calibrate.

    Findings of labelled sets are kept (training then says what is missing, as without feedback).
    """
    from meddx.train.fit import split_indices

    dropped = dict(data.dropped)
    while True:
        train, validation = split_indices(data.targets, fraction, seed)
        parts = {"whole": np.arange(len(data)), "training": train, "validation": validation}
        thin = next(
            (
                (column, reason)
                for column, finding in enumerate(data.findings)
                if finding.id not in protected and (reason := _thin(data, column, parts)) is not None
            ),
            None,
        )
        if thin is None:
            break
        dropped[data.findings[thin[0]].id] = thin[1]
        data = data.columns([c for c in range(len(data.findings)) if c != thin[0]])
        if not data.findings:
            raise InputError(
                "No finding has enough labels to train on: "
                + "; ".join(f"{fid}: {why}" for fid, why in dropped.items())
                + ". Each needs at least 2 positive and 2 negative labels, and some of each on both sides "
                "of the validation split; collect more feedback or add a labelled set."
            )
    return TrainingSet(data.description, data.findings, data.targets, data.mask, data.feedback, dropped)


__all__ = ["FEEDBACK_TARGETS", "TrainingSet", "build_training_set", "check_feedback_encoder", "read_sources"]
