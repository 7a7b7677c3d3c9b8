"""The model card a result carries and the page shows: which family, which weights at which revision, under
which licence (and whether the repo is gated), the input size, what one analysis costs on this server, and
whether the scores are calibrated.

The licence is read from the repo's own files: the ``license`` of its README's front matter (the Hub's model
card metadata), else ``config.json``'s; gated when the front matter asks the user to accept terms
(``extra_gated_*`` fields or ``gated``); "unknown" when the files say nothing. Never from the model's name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from meddx.device import describe
from meddx.model.families import DESCRIPTIONS

if TYPE_CHECKING:  # the page and result types import this module without the model stack
    from meddx.model.encoder import Encoder

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ModelCard:
    """What a user should know about the model behind the scores.

    Attributes:
        family: the family in words (`meddx.model.families.DESCRIPTIONS`).
        licence: the licence the repo states, or "unknown".
        gated: whether the repo asks users to accept terms ("unknown" when no card says).
        input_size: the square input side in pixels.
        analysis_s: seconds one analysis took on this server at warm-up (None: not measured yet).
        calibrated: whether a calibration maps the zero-shot scores.
        device: where the model ran, in words (`meddx.device.describe`: "CPU", "CUDA: NVIDIA L4").
        precision: the scoring pass's precision ("fp32", or "bfloat16"/"float16" where it measured equal,
            `meddx.model.precision`).
    """

    family: str
    licence: str
    gated: bool | str
    input_size: int
    analysis_s: float | None
    calibrated: bool
    device: str = "CPU"
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "licence": self.licence,
            "gated": self.gated,
            "input_size": self.input_size,
            "analysis_s": None if self.analysis_s is None else round(self.analysis_s, 2),
            "calibrated": self.calibrated,
            "device": self.device,
            "precision": self.precision,
        }

    def line(self) -> str:
        """The card in one sentence for the page and the report."""
        gated = {True: ", gated", False: "", UNKNOWN: ""}[self.gated]
        cost = (
            f"one analysis ≈ {self.analysis_s:.1f} s on this server"
            if self.analysis_s
            else "cost not measured"
        )
        calibrated = "calibrated scores" if self.calibrated else "uncalibrated zero-shot scores"
        where = self.device if self.precision == "fp32" else f"{self.device}, {self.precision} scoring"
        return (
            f"{self.family}; licence {self.licence}{gated}; {self.input_size} px input; runs on {where}; "
            f"{cost}; {calibrated}"
        )


def front_matter(readme: Path) -> dict:
    """The YAML front matter of a Hub README (``---`` ... ``---``), or {}."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        data = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def licence_of(folder: Path) -> tuple[str, bool | str]:
    """(licence, gated) from the repo's README front matter, else its ``config.json``; "unknown" if silent."""
    meta = front_matter(folder / "README.md")
    licence = meta.get("license") or meta.get("licence")
    if not licence and (folder / "config.json").is_file():
        try:
            licence = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("license")
        except ValueError:
            licence = None
    if isinstance(licence, list):
        licence = ", ".join(str(x) for x in licence)
    if not meta:
        gated: bool | str = UNKNOWN
    else:
        gated = bool(meta.get("gated")) or any(str(k).startswith("extra_gated") for k in meta)
    return str(licence) if licence else UNKNOWN, gated


def model_card(encoder: Encoder, *, calibrated: bool) -> ModelCard:
    """The card of a loaded encoder (its licence read once)."""
    cached = encoder.__dict__.get("_licence")
    if cached is None:
        cached = encoder.__dict__["_licence"] = licence_of(encoder.resolved.folder)
    licence, gated = cached
    return ModelCard(
        family=DESCRIPTIONS.get(encoder.family, encoder.family),
        licence=licence,
        gated=gated,
        input_size=encoder.image_size,
        analysis_s=encoder.__dict__.get("_analysis_s"),
        calibrated=calibrated,
        device=describe(encoder.device),
        precision=str(encoder.autocast).removeprefix("torch.") if encoder.autocast else "fp32",
    )


def record_analysis_cost(encoder: Encoder, run) -> float:
    """Time ``run()`` (one analysis at warm-up) and keep it as the encoder's cost per analysis."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    encoder.__dict__["_analysis_s"] = seconds
    return seconds
