"""Runtime settings, read once from the environment.

Every knob lives here as a frozen dataclass so the rest of the package receives plain values and never
reads the environment itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from meddx.device import parse_device
from meddx.explain.methods import DEFAULT_METHOD

DEFAULT_MODEL = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
DEFAULT_CACHE_DIR = Path("~/.cache/meddx").expanduser()


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _choice_env(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Limits:
    """Guards against inputs that would hang or exhaust a small CPU Space."""

    max_file_mb: float = 64
    max_pixels: int = 60_000_000
    min_side: int = 32
    max_note_chars: int = 20_000
    max_labels: int = 64
    request_timeout_s: float = 120
    """Time budget of one app request, in seconds (`meddx.pipeline.analyze` checks it between steps)."""
    read_timeout_s: float = 30
    """Wall-clock limit on reading one film (`meddx.io.bounded`: a worker process, killed after this); 0
    reads in the calling process, unbounded."""
    read_memory_mb: int = 2048
    """Memory the worker that reads one film may use on top of what it starts with."""
    max_inflated_mb: float = 256
    """Most bytes a Deflated Explicit VR Little Endian DICOM data set may inflate to."""
    max_frames: int = 1000
    """Most pages or frames walked in a multi-page TIFF, animated GIF or WebP, or a multi-frame DICOM."""
    max_sequence_items: int = 10_000
    """Most sequence items (and encapsulated fragments) in a DICOM data set."""
    max_sequence_depth: int = 8
    """Deepest nesting of DICOM sequences."""
    max_data_elements: int = 100_000
    """Most data elements (at every level) in a DICOM data set."""

    @property
    def max_file_bytes(self) -> int:
        """`max_file_mb` in bytes: the largest upload `meddx.io.load_study` reads."""
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_inflated_bytes(self) -> int:
        """`max_inflated_mb` in bytes."""
        return int(self.max_inflated_mb * 1024 * 1024)


@dataclass(frozen=True)
class Settings:
    """What meddx runs with. Build with `Settings.from_env()`; override fields with `dataclasses.replace`."""

    model: str = DEFAULT_MODEL
    probe: str | None = None
    calibration: str | None = None
    """A zero-shot calibration folder written by ``python -m meddx calibrate`` (``MEDDX_CALIBRATION``,
    ``DIR`` or ``local-dir:DIR``): calibrated probabilities and measured operating thresholds; None: the
    zero-shot scores are uncalibrated and nothing is flagged (`meddx.model.calibration`)."""
    threads: int | None = None
    top_k_maps: int = 3
    attribution_method: str = DEFAULT_METHOD
    limits: Limits = field(default_factory=Limits)
    cache_dir: Path = DEFAULT_CACHE_DIR
    """Root of meddx's on-disk caches: ``text-directions/`` (per model) and ``embeddings/`` (training)."""
    feedback_dir: Path | None = None
    """Where clinician feedback records go (`meddx.train.feedback`); None: feedback is off."""
    feedback_repo: str | None = None
    """A private Hub dataset (``owner/name``) the feedback folder is pushed to; None: kept local."""
    feedback_every_min: float = 5
    """Minutes between pushes of the feedback folder to ``feedback_repo``."""
    stem: str = "fp32"
    """The image-tower stem of the scoring pass (`meddx.model.stem`): "fp32" or "int8" (ONNX Runtime,
    exported into ``cache_dir/stem/``; int8 only if it passes the agreement gate) or "torch"."""
    device: str = "auto"
    """Where the model runs (``MEDDX_DEVICE``): "auto" (CUDA when PyTorch sees it, else the CPU), "cpu",
    "cuda" or "cuda:N"; resolved (a named GPU that is missing is refused) by `meddx.device.resolve_device`."""
    examples: str | None = None
    """Example films for the page (`MEDDX_EXAMPLES`): a folder, or ``hf-dataset:owner/name[@rev][:dir]``."""
    hold_back: bool = True
    """On the page, hold the scores of a film without plausible lung fields behind "Analyse anyway"
    (`meddx.app.anyway`); ``MEDDX_HOLD_BACK=0`` shows them at once. The API and CLI return them with the
    warning either way."""

    @property
    def embedding_cache_dir(self) -> Path:
        """Where training and evaluation cache image embeddings (`meddx.train.embedding_cache`)."""
        return self.cache_dir / "embeddings"

    @classmethod
    def from_env(cls) -> Settings:
        """Read `MEDDX_*` variables; unset ones keep their defaults."""
        limits = Limits(
            max_file_mb=_int_env("MEDDX_MAX_FILE_MB", Limits.max_file_mb),
            max_pixels=_int_env("MEDDX_MAX_PIXELS", Limits.max_pixels),
            max_note_chars=_int_env("MEDDX_MAX_NOTE_CHARS", Limits.max_note_chars),
            max_labels=_int_env("MEDDX_MAX_LABELS", Limits.max_labels),
            request_timeout_s=_int_env("MEDDX_REQUEST_TIMEOUT_S", Limits.request_timeout_s),
            read_timeout_s=_int_env("MEDDX_READ_TIMEOUT_S", Limits.read_timeout_s),
            read_memory_mb=_int_env("MEDDX_READ_MEMORY_MB", Limits.read_memory_mb),
        )
        threads = _int_env("MEDDX_THREADS", 0) or None
        feedback_dir = os.environ.get("MEDDX_FEEDBACK_DIR", "").strip()
        feedback_repo = os.environ.get("MEDDX_FEEDBACK_REPO", "").strip() or None
        if feedback_repo and not feedback_dir:
            raise ValueError("MEDDX_FEEDBACK_REPO needs MEDDX_FEEDBACK_DIR (the local folder it pushes)")
        if feedback_repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", feedback_repo):
            raise ValueError(f"MEDDX_FEEDBACK_REPO must be owner/name, got {feedback_repo!r}")
        return cls(
            model=os.environ.get("MEDDX_MODEL", "").strip() or DEFAULT_MODEL,
            probe=os.environ.get("MEDDX_PROBE", "").strip() or None,
            calibration=os.environ.get("MEDDX_CALIBRATION", "").strip() or None,
            threads=threads,
            top_k_maps=_int_env("MEDDX_TOP_K_MAPS", cls.top_k_maps),
            attribution_method=os.environ.get("MEDDX_ATTRIBUTION", "").strip() or cls.attribution_method,
            limits=limits,
            cache_dir=Path(os.environ.get("MEDDX_CACHE_DIR", "").strip() or DEFAULT_CACHE_DIR).expanduser(),
            feedback_dir=Path(feedback_dir).expanduser() if feedback_dir else None,
            feedback_repo=feedback_repo,
            feedback_every_min=_int_env("MEDDX_FEEDBACK_EVERY_MIN", cls.feedback_every_min),
            stem=_choice_env("MEDDX_STEM", cls.stem, ("fp32", "int8", "torch")),
            device=parse_device(os.environ.get("MEDDX_DEVICE")),
            examples=os.environ.get("MEDDX_EXAMPLES", "").strip() or None,
            hold_back=_choice_env("MEDDX_HOLD_BACK", "1", ("1", "0")) == "1",
        )
