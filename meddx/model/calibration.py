"""Calibrated zero-shot scores and measured operating thresholds, as a folder tied to one model revision.

``python -m meddx calibrate`` (`meddx.train.calibrate`) measures, on labelled films, per finding:

- a **Platt scaling** of the zero-shot probability ``p``: ``sigmoid(scale * logit(p) + bias)`` with
  ``scale > 0``, so the ranking (and AUROC) never changes; ``p`` is clipped to ``[1e-6, 1 - 1e-6]``
  before the logit, the same way when fitting and when serving (`calibrated_probability`);
- an **operating threshold** on that calibrated probability, chosen for a requested sensitivity, or none
  when the data has too few positives to choose one (such a finding is never flagged).

The folder holds ``calibration.json`` (the numbers, the encoder identity, a digest of each finding's
prompts, the data's description and counts, never a file name) and ``README.md`` (a card). It is loaded
with ``MEDDX_CALIBRATION=DIR`` (or ``local-dir:DIR``) and refused (`ModelError`) when the loaded model is
another model or revision (the rule of `meddx.model.head.TrainedHead.check_encoder`: the scores of other
weights are other scores), or when a finding's prompts in ``findings.yaml`` changed since it was measured.
"""

from __future__ import annotations

import hashlib
import json
import threading
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from meddx.errors import ModelError
from meddx.model.encoder import Encoder
from meddx.model.head import EncoderIdentity, encoder_identity
from meddx.model.vocabulary import Finding, load_vocabulary

CALIBRATION_FORMAT = "meddx-zero-shot-calibration"
CALIBRATION_FORMAT_VERSION = 1
CALIBRATION_CONFIG = "calibration.json"
CALIBRATION_CARD = "README.md"
LOCAL_PREFIX = "local-dir:"
_EPS = 1e-6


def prompts_digest(finding: Finding) -> str:
    """sha256 of a finding's positive and negative prompt ensembles: what its zero-shot score depends on."""
    positive, negative = finding.prompts()
    return hashlib.sha256(json.dumps([positive, negative]).encode("utf-8")).hexdigest()


def zero_shot_logit(probability: float | np.ndarray) -> np.ndarray:
    """The logit of a zero-shot probability, clipped to ``[1e-6, 1 - 1e-6]`` (float64)."""
    p = np.clip(np.asarray(probability, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def calibrated_probability(probability: float | np.ndarray, scale: float, bias: float) -> np.ndarray:
    """``sigmoid(scale * logit(p) + bias)``: one function for fitting and serving."""
    return np.exp(-np.logaddexp(0.0, -(scale * zero_shot_logit(probability) + bias)))  # no overflow


class Calibration:
    """A loaded calibration: per finding, Platt ``(scale, bias)`` and an operating threshold or None.

    Args:
        metadata: The ``calibration.json`` content (see the module docstring).
        source: Where it was loaded from (for messages and results).

    Raises:
        ModelError: the metadata is not a meddx calibration, or is damaged.
    """

    def __init__(self, metadata: dict, *, source: str | None = None) -> None:
        self.metadata = metadata
        self.source = source
        try:
            if metadata.get("format") != CALIBRATION_FORMAT:
                raise ValueError(f"format is {metadata.get('format')!r}, not {CALIBRATION_FORMAT!r}")
            self.encoder = EncoderIdentity(**metadata["encoder"])
            self._findings = {}
            for finding_id, entry in metadata["findings"].items():
                if entry["scale"] is None:
                    continue  # one class only in the data: not calibrated
                threshold = entry["threshold"]
                scale, bias = float(entry["scale"]), float(entry["bias"])
                if not scale > 0 or (threshold is not None and not 0 < float(threshold) < 1):
                    raise ValueError(f"{finding_id}: scale must be > 0 and the threshold in (0, 1)")
                self._findings[finding_id] = (scale, bias, threshold, entry["prompts_sha256"], entry["label"])
            self.sensitivity = float(metadata["target_sensitivity"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"The calibration {source or ''} is damaged or not a meddx calibration ({exc}). Run "
                "`python -m meddx calibrate` again."
            ) from exc

    @property
    def finding_ids(self) -> tuple[str, ...]:
        """The findings this calibration covers (both classes were in its data)."""
        return tuple(self._findings)

    @property
    def data_description(self) -> str:
        """What it was measured on, in words: the kind of data and its size."""
        data = self.metadata["data"]
        return f"{data['description']}, {data['images']} images"

    def covers(self, finding: Finding) -> bool:
        """Whether this finding, with these prompts, was calibrated."""
        entry = self._findings.get(finding.id)
        return entry is not None and entry[3] == prompts_digest(finding)

    def probability(self, finding_id: str, zero_shot: float) -> float:
        """The calibrated probability of a zero-shot probability (`calibrated_probability`)."""
        scale, bias = self._findings[finding_id][:2]
        return float(calibrated_probability(zero_shot, scale, bias))

    def threshold(self, finding_id: str) -> float | None:
        """The measured operating threshold on the calibrated probability; None: too few positives."""
        threshold = self._findings[finding_id][2]
        return None if threshold is None else float(threshold)

    @property
    def rule(self) -> str:
        """How the thresholds were chosen and on what, in words (results and reports quote it)."""
        return (
            f"zero-shot scores calibrated (Platt scaling) and thresholds chosen for sensitivity "
            f"{self.sensitivity:g} on {self.data_description} ({self.metadata['created'][:10]}); measured "
            "on that data only"
        )

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse a model other than the one the calibration was measured on.

        Raises:
            ModelError: the embedding size, the model or its revision differ.
        """
        loaded = encoder_identity(encoder)
        if loaded.embed_dim == self.encoder.embed_dim and loaded.key == self.encoder.key:
            return
        raise ModelError(
            f"The calibration {self.source or ''} (MEDDX_CALIBRATION) was measured on {self.encoder}, but "
            f"the loaded model is {loaded}. Calibrated probabilities and thresholds hold only for the exact "
            "model and revision they were measured on. Fix: load that model (MEDDX_MODEL), or calibrate this "
            f"one: python -m meddx calibrate --model {loaded.spec} --data LABELLED --out DIR."
        )

    def check_prompts(self) -> None:
        """Refuse a calibration whose findings' prompts changed since it was measured.

        Raises:
            ModelError: naming the findings whose prompts differ.
        """
        vocabulary = load_vocabulary()
        known = {f.id for f in vocabulary.findings}
        changed = [
            finding_id
            for finding_id, (_, _, _, digest, label) in self._findings.items()
            if prompts_digest(
                vocabulary.finding(finding_id) if finding_id in known else vocabulary.custom(label)
            )
            != digest
        ]
        if changed:
            raise ModelError(
                f"The calibration {self.source or ''} (MEDDX_CALIBRATION) was measured with other prompts "
                f"for {', '.join(changed)} than findings.yaml has now; its numbers do not hold for these "
                "scores. Fix: run `python -m meddx calibrate` again."
            )


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "none"
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, list):
            return f"{value[0]:.2f} to {value[1]:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_card(metadata: dict) -> str:
    """The card (``README.md``) of a calibration folder, from ``meddx/model/calibration_card.md``."""
    text = resources.files("meddx.model").joinpath("calibration_card.md").read_text(encoding="utf-8")
    findings = metadata["findings"]
    rows = [
        [
            e["label"],
            e["positives"],
            e["negatives"],
            e["threshold"],
            e["sensitivity"],
            e["sensitivity_ci"],
            e["specificity"],
            e["specificity_ci"],
            e["auroc"],
            e["ece_before"],
            e["ece_after"],
        ]
        for e in findings.values()
    ]
    unflagged = [f"- **{e['label']}**: {e['note']}" for e in findings.values() if e["note"]]
    encoder = metadata["encoder"]
    data = metadata["data"]
    return Template(text).substitute(
        labels=", ".join(e["label"] for e in findings.values()),
        encoder_spec=encoder["spec"],
        encoder_model=encoder["model"],
        encoder_revision=encoder["revision"],
        sensitivity=f"{metadata['target_sensitivity']:g}",
        min_positives=metadata["min_positives"],
        data_source=data["description"],
        images=data["images"],
        table=_table(
            [
                "finding",
                "positives",
                "negatives",
                "threshold",
                "sensitivity",
                "95% CI",
                "specificity",
                "95% CI",
                "AUROC",
                "ECE before",
                "ECE after",
            ],
            rows,
        ),
        unflagged="\n".join(unflagged) or "- none: every finding has a threshold.",
        calibration_rule=metadata["calibration_rule"],
        threshold_rule=metadata["threshold_rule"],
        interval_rule=metadata["interval_rule"],
        ece_rule=metadata["ece_rule"],
        created=metadata["created"],
        version=metadata["meddx_version"],
    )


def save_calibration(metadata: dict, folder: str | Path) -> Path:
    """Write ``calibration.json`` and ``README.md`` into a folder (checked by loading); return the folder."""
    Calibration(metadata)
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metadata, indent=2, allow_nan=False)
    (folder / CALIBRATION_CONFIG).write_text(text + "\n", encoding="utf-8")
    (folder / CALIBRATION_CARD).write_text(render_card(metadata), encoding="utf-8")
    return folder


def read_calibration(spec: str) -> Calibration:
    """Read a calibration folder (``DIR`` or ``local-dir:DIR``; no cache) and check its prompts.

    Raises:
        ModelError: the folder or its file is missing, damaged, or its prompts changed.
    """
    folder = Path(spec.removeprefix(LOCAL_PREFIX)).expanduser().resolve()
    path = folder / CALIBRATION_CONFIG
    if not path.is_file():
        raise ModelError(
            f"{spec} is not a meddx calibration ({CALIBRATION_CONFIG} missing). Point MEDDX_CALIBRATION at a "
            "folder written by `python -m meddx calibrate --out DIR`."
        )
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"The calibration {spec} is damaged ({type(exc).__name__}). Run calibrate again."
        ) from exc
    calibration = Calibration(metadata, source=spec)
    calibration.check_prompts()
    return calibration


_CACHE: dict[str, Calibration] = {}
_LOCK = threading.Lock()


def load_calibration(spec: str) -> Calibration:
    """`read_calibration` once per process (thread-safe)."""
    with _LOCK:
        if spec not in _CACHE:
            _CACHE[spec] = read_calibration(spec)
        return _CACHE[spec]


def clear_calibration_cache() -> None:
    """Forget loaded calibrations (tests, or after calibrating into the same folder again)."""
    with _LOCK:
        _CACHE.clear()
