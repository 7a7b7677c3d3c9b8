"""Load the image-text encoder (named by a `meddx.model.spec` spec) and turn images and texts into embeddings.

Every model family (`meddx.model.families`: open_clip with a Hugging Face text tower, open_clip with its own
text transformer, transformers SigLIP, transformers CLIP) is built by its own module into this one `Encoder`,
which the rest of meddx uses without knowing the family. Models are built with empty parameters and the
checkpoint's tensors assigned to them (one copy of the weights), cached per process and device
(`load_encoder`: ``MEDDX_DEVICE`` / ``--device``, `meddx.device`); loading is thread-safe.

On a CUDA device the model lives there; images and texts go in from the host and their embeddings come back
to it (`embed_images`, `embed_texts`), so heads, calibrations and caches never see a device tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from meddx.model.geometry import Geometry, PadToSquare
from meddx.model.spec import ResolvedModel, resolve
from meddx.model.vision import VisionTower

log = logging.getLogger(__name__)


TEXT_BATCH = 16
"""Texts embedded together (`Encoder.embed_texts`)."""

Tokenizer = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
"""Texts to token ids (N, L), padded to the family's context length, and each text's length in tokens (N,)."""


@dataclass
class Encoder:
    """A loaded image-text model with its tokenizer, preprocessing and scoring rule, whatever its family.

    Attributes:
        resolved: where its files are and which revision.
        model: the whole model (open_clip ``CLIP``/``CustomTextCLIP``, transformers ``SiglipModel``...).
        tokenizer: texts -> (ids, lengths) (`Tokenizer`).
        image_size, mean, std: the square input side and the per-channel normalisation of its pixels.
        tower: the image tower as a `meddx.model.vision.VisionTower`.
        visual: pixels (N, 3, S, S) -> unnormalised image embedding (N, D), differentiable.
        encode_text: token ids -> unnormalised text embeddings.
        family: which family module built it (`meddx.model.families`).
        scoring: ``softmax`` or ``sigmoid`` (`meddx.model.zero_shot`).
        logit_bias: SigLIP's learned bias (0 for the others).
        trim_text: whether padding may be cut off the token ids (not for SigLIP: it pools the last position).
        checkpoint: the single weights file released weights are read back from (None: nothing released).
        embed_dim: the embedding size.
        resample: how `PadToSquare` resizes (the family's own preprocessing).
        text_owner: the module holding the text tower's releasable weights, or None.
        device: where the model's weights are (`load_encoder`); inputs are moved there.
        autocast: the mixed-precision dtype the scoring pass runs in, or None (fp32): set at warm-up on a
            CUDA device only where its scores agree with fp32 (`meddx.model.precision`).
    """

    resolved: ResolvedModel
    model: torch.nn.Module
    tokenizer: Tokenizer
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tower: VisionTower
    visual: torch.nn.Module
    encode_text: Callable[[torch.Tensor], torch.Tensor]
    family: str
    embed_dim: int
    checkpoint: Path | None
    scoring: str = "softmax"
    logit_bias: float = 0.0
    trim_text: bool = True
    resample: Image.Resampling = Image.Resampling.BICUBIC
    text_owner: torch.nn.Module | None = field(default=None, repr=False)
    """The module whose releasable weights are the text tower's (`meddx.model.weights`), if any."""
    direction_cache: dict = field(default_factory=dict, repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    autocast: torch.dtype | None = None
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
        weights = self.resolved.weights
        stat = weights.stat()
        raw = f"{self.spec}|{self.revision}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature (already exponentiated)."""
        return float(self.model.logit_scale.detach().exp())

    def with_model(self, model: torch.nn.Module) -> Encoder:
        """A copy around another instance of the same architecture (e.g. re-initialised weights): its own
        image tower and image module, nothing cached."""
        from dataclasses import replace

        from meddx.model.vision import vision_tower

        model = move_resident(model, self.device)
        own = getattr(self.model, "visual", None) is self.visual
        visual = model.visual if own else type(self.visual)(model)
        return replace(
            self,
            model=model,
            tower=vision_tower(model, self.image_size),
            visual=visual,
            direction_cache={},
            runtime_stem=None,
            autocast=None,
        )

    def precision(self) -> contextlib.AbstractContextManager:
        """The scoring pass's precision: autocast to `autocast` where warm-up kept it, else fp32."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """One image to a model input tensor (3, S, S) and the geometry that undoes the padding."""
        from torchvision.transforms import functional

        square, geometry = PadToSquare(self.image_size, resample=self.resample)(image)
        pixels = functional.normalize(functional.to_tensor(square.convert("RGB")), self.mean, self.std)
        return pixels, geometry

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (N, D) on the host for a batch of preprocessed images (N, 3, S, S),
        run on the model's device."""
        return torch.nn.functional.normalize(self.visual(pixels.to(self.device)), dim=-1).cpu()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids trimmed to the longest text (where the family allows): padding to the full context costs
        ~12x, same result."""
        return self._trimmed(*self.tokenizer(list(texts)))

    def _trimmed(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.trim_text or not len(lengths):
            return tokens
        return tokens[:, : max(1, int(lengths.max()))]

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D) on the host, in the order given (`meddx.model.zero_shot` caches
        them).

        Texts go through shortest first, `TEXT_BATCH` at a time, each batch trimmed to its own longest, so
        that little of a batch is padding: BiomedCLIP's 240 vocabulary prompts in 2.3 s instead of 4.5 s
        as one batch (same embeddings to 2e-7).
        """
        tokens, lengths = self.tokenizer(list(texts))
        order = torch.argsort(lengths, stable=True)
        with torch.inference_mode():
            parts = [
                torch.nn.functional.normalize(
                    self.encode_text(self._trimmed(tokens[batch], lengths[batch]).to(self.device)), dim=-1
                ).cpu()
                for batch in order.split(TEXT_BATCH)
            ]
            embeddings = torch.cat(parts)
            embeddings[order] = embeddings.clone()  # back to the order given
            return embeddings


def build_encoder(resolved: ResolvedModel) -> Encoder:
    """Build the model of a resolved spec with its family's module (`meddx.model.families`)."""
    from meddx.model.families import family_module

    return family_module(resolved.family).build(resolved)


def move_resident(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module.to(device)`` for the weights in memory; weights not read yet (on the meta device,
    `meddx.model.weights`) stay there and are read back onto the device of the rest when first needed."""
    return module._apply(lambda tensor: tensor if tensor.is_meta else tensor.to(device))


_CACHE: dict[tuple[str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: str, *, threads: int | None = None, device: str = "cpu") -> Encoder:
    """Load a model once per process and device (thread-safe) and return the cached `Encoder`.

    Args:
        spec: the model (`meddx.model.spec`).
        threads: PyTorch's CPU threads (None: leave as set).
        device: ``auto``, ``cpu`` (default: a GPU only where asked for), ``cuda`` or ``cuda:N``
            (`meddx.device.resolve_device`); the app and the commands pass ``Settings.device``.

    Raises:
        ModelError: the model cannot be loaded, or a GPU was named that this machine does not have.
    """
    from meddx.device import describe, resolve_device

    if threads:
        torch.set_num_threads(threads)
    where = resolve_device(device)
    if where.type == "cuda" and where.index is None:  # "cuda" and "cuda:0" share one copy of the model
        where = torch.device("cuda", torch.cuda.current_device())
    with _CACHE_LOCK:
        key = (spec, str(where))
        if key not in _CACHE:
            log.info("loading model %s on %s", spec, describe(where))
            encoder = build_encoder(resolve(spec))
            if where.type != "cpu":
                move_resident(encoder.model, where)
                encoder.device = where
            _CACHE[key] = encoder
            log.info("loaded model %s at revision %s", spec, encoder.revision)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget loaded models (tests, or to reload after a download)."""
    with _CACHE_LOCK:
        _CACHE.clear()
