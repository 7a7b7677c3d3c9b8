"""The transformers families' shared builder (`siglip`, `clip`): ``AutoConfig`` -> ``AutoModel.from_config``
with empty parameters, the checkpoint assigned with the text model left unread; ``AutoTokenizer`` and
``AutoImageProcessor`` read from the repo's own files.

A checkpoint that does not map one-to-one onto the model's keys (a sharded one, or one needing transformers'
key conversions) is loaded by ``AutoModel.from_pretrained`` instead: all weights in memory, none released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from meddx.model.encoder import Encoder
from meddx.model.families.common import assign_checkpoint, build_failed
from meddx.model.spec import ResolvedModel
from meddx.model.vision import vision_tower
from meddx.model.weights import releasable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What differs between the transformers families."""

    family: str
    scoring: str
    trim_text: bool
    resample: Image.Resampling
    default_mean: tuple[float, float, float]
    default_std: tuple[float, float, float]


class ImageFeatures(nn.Module):
    """Pixels -> the model's own unnormalised image embedding (``get_image_features``'s pooled output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))


def _pooled(output: object) -> torch.Tensor:
    """transformers 5 returns an output object (pooled embedding in ``pooler_output``); 4 a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _load(resolved: ResolvedModel) -> tuple[nn.Module, bool]:
    """The model and whether its text model was left unread."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(resolved.folder)
    checkpoint = resolved.weights
    if checkpoint.name.endswith(".safetensors") or checkpoint.suffix == ".bin":
        with init_empty_weights(include_buffers=False):
            model = AutoModel.from_config(config)
        try:
            assign_checkpoint(model, checkpoint, unread=lambda key: key.startswith("text_model."))
            return model, True
        except RuntimeError as exc:
            log.info("checkpoint keys need transformers' loader (%s)", type(exc).__name__)
    return AutoModel.from_pretrained(resolved.folder), False


def build(resolved: ResolvedModel, recipe: Recipe) -> Encoder:
    """Build a transformers image-text model, its tokenizer and preprocessing from the folder."""
    from transformers import AutoImageProcessor, AutoTokenizer

    resolved.weights  # noqa: B018 (raises the user's message when there are none)
    try:
        model, text_unread = _load(resolved)
        tokenizer = AutoTokenizer.from_pretrained(resolved.folder)
    except Exception as exc:  # any failure to build from files is the user's to fix, with this message
        raise build_failed(resolved, exc) from exc
    model.eval()
    vision_config, text_config = model.config.vision_config, model.config.text_config
    image_size = int(vision_config.image_size)
    mean, std = recipe.default_mean, recipe.default_std
    if (resolved.folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(resolved.folder)
        mean = tuple(getattr(processor, "image_mean", None) or mean)
        std = tuple(getattr(processor, "image_std", None) or std)
    context = int(text_config.max_position_embeddings)

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = tokenizer(
            texts, padding="max_length", max_length=context, truncation=True, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"].sum(dim=1)

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=tokens))

    encoder = Encoder(
        resolved=resolved,
        model=model,
        tokenizer=tokenize,
        image_size=image_size,
        mean=mean,
        std=std,
        tower=vision_tower(model, image_size),
        visual=ImageFeatures(model),
        encode_text=encode_text,
        family=recipe.family,
        embed_dim=int(getattr(model.config, "projection_dim", None) or vision_config.hidden_size),
        checkpoint=resolved.weights if text_unread else None,
        scoring=recipe.scoring,
        logit_bias=float(model.logit_bias.detach()) if hasattr(model, "logit_bias") else 0.0,
        trim_text=recipe.trim_text,
        resample=recipe.resample,
    )
    if text_unread:
        text = model.text_model
        releasable(encoder, text, lambda: [n for n, _ in text.named_parameters()], text, released=True)
        encoder.text_owner = text
    return encoder
