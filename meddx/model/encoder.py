"""Load the image-text encoder (named by a `meddx.model.spec` spec) and turn images and texts into embeddings.

Models are built with empty parameters and the checkpoint's tensors assigned to them (one copy of the
weights), cached per process; loading is thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from meddx.errors import ModelError
from meddx.model.geometry import Geometry, PadToSquare
from meddx.model.spec import (
    TOKENIZER_VOCABULARIES,
    WEIGHT_NAMES,
    ResolvedModel,
    one_line,
    read_config,
    resolve,
)
from meddx.model.weights import checkpoint_path, read_checkpoint, releasable

log = logging.getLogger(__name__)


TEXT_BATCH = 16
"""Texts embedded together (`Encoder.embed_texts`)."""


@dataclass
class Encoder:
    """A loaded image-text model with its tokenizer and preprocessing."""

    resolved: ResolvedModel
    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    direction_cache: dict = field(default_factory=dict, repr=False)
    runtime_stem: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    """Pixels (N, 3, S, S) to the tokens entering the last block in an inference runtime
    (`meddx.model.stem`), attached at warm-up; None: the PyTorch stem (`meddx.model.tower.run_stem`)."""

    @property
    def spec(self) -> str:
        """The spec string this encoder was loaded from."""
        return str(self.resolved.spec)

    @property
    def revision(self) -> str:
        """The revision actually loaded (a Hub commit hash, or what a downloaded folder records)."""
        return self.resolved.revision

    @property
    def fingerprint(self) -> str:
        """Identifies these exact weights (spec, revision, weight file size and time) for on-disk caches."""
        weights = next(self.resolved.folder / n for n in WEIGHT_NAMES if (self.resolved.folder / n).is_file())
        stat = weights.stat()
        raw = f"{self.spec}|{self.revision}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature (already exponentiated)."""
        return float(self.model.logit_scale.detach().exp())

    @property
    def visual(self) -> torch.nn.Module:
        """The image tower."""
        return self.model.visual

    @property
    def tower(self):
        """The image tower as a `meddx.model.vision.VisionTower` (tokens, layers, pooling head)."""
        from meddx.model.vision import tower_of

        return tower_of(self.visual)

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """One image to a model input tensor (3, S, S) and the geometry that undoes the padding."""
        from torchvision.transforms import functional  # loaded with open_clip, which builds the model

        square, geometry = PadToSquare(self.image_size)(image)
        pixels = functional.normalize(functional.to_tensor(square.convert("RGB")), self.mean, self.std)
        return pixels, geometry

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings for a batch of preprocessed images (N, 3, S, S)."""
        return self.model.encode_image(pixels, normalize=True)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids trimmed to the longest text: padding to the full context costs ~12x, same result."""
        return self._trimmed(self.tokenizer(list(texts)))

    def _trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        used = (tokens != self._pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens

    @property
    def _pad_id(self) -> int:
        return getattr(self.tokenizer.tokenizer, "pad_token_id", 0) or 0

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D), in the order given (`meddx.model.zero_shot` caches them).

        Texts go through shortest first, `TEXT_BATCH` at a time, each batch trimmed to its own longest, so
        that little of a batch is padding: BiomedCLIP's 240 vocabulary prompts in 2.3 s instead of 4.5 s
        as one batch (same embeddings to 2e-7).
        """
        tokens = self.tokenizer(list(texts))
        order = torch.argsort((tokens != self._pad_id).sum(dim=1), stable=True)
        with torch.inference_mode():
            parts = [
                self.model.encode_text(self._trimmed(tokens[batch]), normalize=True)
                for batch in order.split(TEXT_BATCH)
            ]
            embeddings = torch.cat(parts)
            embeddings[order] = embeddings.clone()  # back to the order given
            return embeddings


def build_encoder(resolved: ResolvedModel) -> Encoder:
    """Build the open_clip model and tokenizer from resolved local folders."""
    import open_clip
    from accelerate import init_empty_weights
    from open_clip.tokenizer import HFTokenizer

    config = read_config(resolved.folder, resolved.spec)
    if not any((resolved.folder / name).is_file() for name in WEIGHT_NAMES):
        raise ModelError(
            f"{resolved.spec} has a config but no weights ({' or '.join(WEIGHT_NAMES)}). "
            "Download the model again (`python -m meddx download`)."
        )
    if not any((resolved.text_folder / name).is_file() for name in TOKENIZER_VOCABULARIES):
        raise ModelError(  # transformers would build a tokenizer that reads every word as unknown
            f"{resolved.spec}: the text tower in {resolved.text_folder} has no tokenizer vocabulary "
            f"({' or '.join(TOKENIZER_VOCABULARIES)}). Download the model again (`python -m meddx download`)."
        )
    text_cfg = dict(config["model_cfg"]["text_cfg"])
    text_cfg.update(
        hf_model_name=str(resolved.text_folder),
        hf_tokenizer_name=str(resolved.text_folder),
        hf_model_pretrained=False,
    )
    try:
        # Parameters are made without memory (buffers for real) and the checkpoint's tensors become them:
        # no random initialisation to overwrite, and never two copies of the weights in memory.
        with init_empty_weights(include_buffers=False), _quiet_random_init_warning():
            model = open_clip.create_model(
                f"local-dir:{resolved.folder}",
                text_cfg=text_cfg,
                pretrained_text=False,
                load_weights=False,
                device=None,  # .to("cpu") cannot move parameters that have no data yet
            )
        text_weights = _load_weights(checkpoint_path(resolved.folder), model)
        tokenizer = HFTokenizer(str(resolved.text_folder), context_length=text_cfg.get("context_length", 77))
    except Exception as exc:  # any failure to build from files is the user's to fix, with this message
        raise ModelError(
            f"{resolved.spec} could not be built from its files ({type(exc).__name__}: {one_line(exc)}). "
            "The weights may be damaged or not match the config: download the model again."
        ) from exc
    model.eval()
    preprocess_cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    encoder = Encoder(
        resolved=resolved,
        model=model,
        tokenizer=tokenizer,
        image_size=image_size,
        mean=tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
    )
    if text_weights:  # unread: its first forward reads them (`meddx.model.weights`)
        releasable(encoder, model.text, lambda: text_weights, model.text, released=True)
    return encoder


class _RandomInitWarning(logging.Filter):
    """Drops open_clip's "initialized randomly" warning: the checkpoint is assigned right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    root, quiet = logging.getLogger(), _RandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _text_parameters(model: torch.nn.Module) -> list[str]:
    """The text tower's parameter names (relative to it), or none for a model without a separate one."""
    text = getattr(model, "text", None)
    return [] if text is None else [name for name, _ in text.named_parameters()]


def _load_weights(path: Path, model: torch.nn.Module) -> list[str]:
    """Make the checkpoint's tensors the model's, all but the text tower's parameters, which are left
    unread (on the meta device); returns their names (relative to the text tower).

    The checkpoint must hold exactly the model's keys, text tower included.
    """
    text = _text_parameters(model)
    unread = {f"text.{name}" for name in text}
    state, skipped = read_checkpoint(path, keep=lambda key: key not in unread)
    expected = set(model.state_dict())
    position_ids = "text.transformer.embeddings.position_ids"  # older transformers saved this buffer
    if position_ids in state and position_ids not in expected:
        del state[position_ids]
    stored = set(state) | set(skipped)
    if stored != expected:
        missing, unexpected = sorted(expected - stored), sorted(stored - expected)
        raise RuntimeError(
            f"the checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    return text


_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: str, *, threads: int | None = None) -> Encoder:
    """Load a model once per process (thread-safe) and return the cached `Encoder`."""
    if threads:
        torch.set_num_threads(threads)
    with _CACHE_LOCK:
        if spec not in _CACHE:
            log.info("loading model %s", spec)
            _CACHE[spec] = build_encoder(resolve(spec))
            log.info("loaded model %s at revision %s", spec, _CACHE[spec].revision)
        return _CACHE[spec]


def clear_cache() -> None:
    """Forget loaded models (tests, or to reload after a download)."""
    with _CACHE_LOCK:
        _CACHE.clear()
