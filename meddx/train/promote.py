"""Promotion: a retrained head replaces the served one only when it measures better on the same films.

`compare_heads` scores both heads on the same held-out embeddings and, per finding both heads score (and
the data has both classes for), measures:

- AUROC of each head with a bootstrap 95 % interval (``resamples`` resamples of the images, with
  replacement, seeded; the 2.5th and 97.5th percentiles; resamples with one class only are skipped);
- the paired difference (candidate minus current) on the *same* resamples, with its 95 % interval
  (`meddx.train.paired`, which ``eval`` uses to compare models too);
- the expected calibration error of each head's calibrated probabilities (`meddx.train.metrics.ECE_RULE`).

The decision (`RULE`): promote only when no finding is worse beyond its interval (the whole 95 % interval of
the difference below zero) and the mean AUROC over the compared findings is higher for the candidate. A
candidate that drops a finding the current head scores is refused too. ECE is reported, not decided on.

`record_decision` appends the decision and its numbers to the candidate's ``history`` (``head.json`` and
the card); `promote_head` then copies the candidate over a local current head, or pushes it to the current
head's Hub repo; the new current head carries the old one's history plus this decision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from meddx.errors import InputError
from meddx.model.head import TrainedHead
from meddx.model.head_store import HEAD_FILES, clear_head_cache, publish_head, read_head, save_head
from meddx.model.spec import HF_HUB, ModelSpec
from meddx.train.datasets import LabelledImages
from meddx.train.metrics import expected_calibration_error
from meddx.train.paired import paired_auroc, resample_indices

RESAMPLES = 1000
RULE = (
    "promote only when no finding is worse beyond its interval (the 95 % bootstrap interval of the paired "
    "AUROC difference, candidate minus current, lies wholly below 0) and the mean AUROC over the compared "
    "findings is higher for the candidate; a candidate that drops a finding of the current head is refused"
)


def head_name(head: TrainedHead) -> str:
    """How a decision names a head: its Hub spec and revision, or its date and a digest of its weights."""
    if head.source and head.source.startswith(f"{HF_HUB}:"):
        return f"{head.source} ({head.revision})" if head.revision else head.source
    digest = hashlib.sha256()
    for tensor in (head.linear.weight, head.linear.bias):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return f"head trained {head.metadata.get('created', '?')} (weights sha256:{digest.hexdigest()[:12]})"


def compare_heads(
    candidate: TrainedHead,
    current: TrainedHead,
    embeddings: torch.Tensor,
    data: LabelledImages,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict:
    """Measure both heads on the same held-out images and decide (`RULE`); return the history entry.

    Args:
        candidate, current: The heads (both must have been trained on the encoder that made ``embeddings``).
        embeddings: (N, D) unit image embeddings of ``data``'s images.
        data: The held-out labelled images.
        resamples, seed: The bootstrap.

    Raises:
        InputError: no finding is scored by both heads with both classes in the data.
    """
    missing = [fid for fid in current.finding_ids if fid not in candidate.finding_ids]
    compared = [
        fid
        for fid in current.finding_ids
        if fid in candidate.finding_ids
        and fid in data.labels
        and 0 < int(data.targets[:, data.labels.index(fid)].sum()) < len(data)
    ]
    if not compared:
        raise InputError(
            "No finding can be compared: the held-out data must have positive and negative images for a "
            f"finding both heads score (current: {', '.join(current.finding_ids)}; candidate: "
            f"{', '.join(candidate.finding_ids)}; data: {', '.join(data.labels)})."
        )
    probabilities = {
        "candidate": candidate.probabilities(embeddings).double().numpy(),
        "current": current.probabilities(embeddings).double().numpy(),
    }
    heads = {"candidate": candidate, "current": current}
    samples = resample_indices(len(data), resamples, seed)
    findings = {}
    for fid in compared:
        y = data.targets[:, data.labels.index(fid)].astype(bool)
        scores = {name: probabilities[name][:, heads[name].finding_ids.index(fid)] for name in heads}
        paired = paired_auroc(y, scores, samples, [("candidate", "current")])
        difference = paired["differences"][("candidate", "current")]
        findings[fid] = {
            "positives": int(y.sum()),
            "negatives": int((~y).sum()),
            **{
                name: {
                    "auroc": paired["auroc"][name],
                    "ci": paired["ci"][name],
                    "ece": round(expected_calibration_error(y, scores[name]), 4),
                }
                for name in heads
            },
            "difference": {"auroc": difference["auroc"], "ci": difference["ci"]},
        }
    mean = {name: round(float(np.mean([findings[f][name]["auroc"] for f in compared])), 4) for name in heads}
    reasons = []
    if missing:
        reasons.append(f"The candidate does not score {', '.join(missing)}, which the current head scores.")
    for fid, m in findings.items():
        if m["difference"]["ci"][1] < 0:
            low, high = m["difference"]["ci"]
            reasons.append(
                f"{fid}: AUROC {m['candidate']['auroc']:.3f} vs {m['current']['auroc']:.3f}, worse beyond "
                f"its interval (difference {m['difference']['auroc']:+.3f}, 95 % CI {low:+.3f} to "
                f"{high:+.3f})."
            )
    if mean["candidate"] <= mean["current"]:
        reasons.append(
            f"The mean AUROC is not better ({mean['candidate']:.3f} vs {mean['current']:.3f} for the "
            "current head)."
        )
    promoted = not reasons
    if promoted:
        reasons.append(
            f"Mean AUROC {mean['candidate']:.3f} vs {mean['current']:.3f}, and no finding is worse beyond "
            "its interval."
        )
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "decision": "promoted" if promoted else "refused",
        "rule": RULE,
        "reasons": reasons,
        "candidate": head_name(candidate),
        "current": head_name(current),
        "data": {"description": data.description, "images": len(data)},
        "bootstrap": {"resamples": resamples, "seed": seed},
        "mean_auroc": mean,
        "findings": findings,
    }


def record_decision(candidate_folder: str | Path, entry: dict, *, history: list[dict] | None = None) -> Path:
    """Append a decision to the candidate's history (``head.json`` and the card), after ``history``.

    ``history`` is the current head's history when the candidate is promoted (the new current head carries
    it on); None keeps the candidate's own.
    """
    folder = Path(candidate_folder).expanduser().resolve()
    head = read_head(folder)
    earlier = head.metadata.get("history", []) if history is None else history
    head.metadata["history"] = [*earlier, entry]
    return save_head(head, folder)


def _local_folder(spec: str) -> Path | None:
    """The folder of a ``local-dir:`` spec or a plain path; None for a Hub spec."""
    if spec.startswith(f"{HF_HUB}:"):
        return None
    location = ModelSpec.parse(spec).location if spec.startswith("local-dir:") else spec
    return Path(location).expanduser().resolve()


def promote_head(candidate_folder: str | Path, current_spec: str, *, api=None) -> str:
    """Make the candidate the current head: copy it over a local folder, or push it to the Hub repo.

    Files are replaced one by one with `os.replace` (each is whole, old or new); the Hub push goes through
    `meddx.model.head.publish_head` (``api`` as there). Returns where the head now is.
    """
    folder = Path(candidate_folder).expanduser().resolve()
    target = _local_folder(current_spec)
    clear_head_cache()
    if target is None:
        repo_id = ModelSpec.parse(current_spec).location
        return publish_head(folder, repo_id, api=api)
    target.mkdir(parents=True, exist_ok=True)
    for name in HEAD_FILES:
        handle, temporary = tempfile.mkstemp(dir=target, suffix=".tmp")
        os.close(handle)
        try:
            shutil.copyfile(folder / name, temporary)
            os.replace(temporary, target / name)
        finally:
            Path(temporary).unlink(missing_ok=True)
    return str(target)


__all__ = ["RESAMPLES", "RULE", "compare_heads", "head_name", "promote_head", "record_decision"]
