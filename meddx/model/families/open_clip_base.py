"""The open_clip families' shared builder: a model from ``open_clip_config.json`` with empty parameters, the
checkpoint assigned, and the text tower left unread until its first forward."""

from __future__ import annotations

from collections.abc import Callable

import torch

from meddx.model.encoder import Encoder, Tokenizer
from meddx.model.families.common import assign_checkpoint, build_failed, quiet_random_init_warning
from meddx.model.spec import ResolvedModel, read_config
from meddx.model.vision import vision_tower
from meddx.model.weights import releasable


def create_empty(resolved: ResolvedModel, **overrides) -> torch.nn.Module:
    """The open_clip model of the folder's config with parameters that have no data yet."""
    import open_clip
    from accelerate import init_empty_weights

    # Parameters are made without memory (buffers for real) and the checkpoint's tensors become them:
    # no random initialisation to overwrite, and never two copies of the weights in memory.
    with init_empty_weights(include_buffers=False), quiet_random_init_warning():
        return open_clip.create_model(
            f"local-dir:{resolved.folder}",
            load_weights=False,
            device=None,  # .to("cpu") cannot move parameters that have no data yet
            **overrides,
        )


def finish(
    resolved: ResolvedModel,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    *,
    family: str,
    text_owner: torch.nn.Module,
    text_names: Callable[[], list[str]],
    text_entry: torch.nn.Module,
    trim_text: bool = True,
) -> Encoder:
    """Assign the checkpoint (text tower unread) and wrap the model as an `Encoder`."""
    import open_clip

    checkpoint = resolved.weights
    prefix = next(k for k, m in model.named_modules() if m is text_owner)
    unread = {f"{prefix}.{n}" if prefix else n for n in text_names()}
    try:
        assign_checkpoint(model, checkpoint, unread=unread.__contains__)
    except Exception as exc:  # any failure to build from files is the user's to fix, with this message
        raise build_failed(resolved, exc) from exc
    model.eval()
    config = read_config(resolved.folder, resolved.spec)
    preprocess_cfg = getattr(model.visual, "preprocess_cfg", {}) or config.get("preprocess_cfg", {})
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    encoder = Encoder(
        resolved=resolved,
        model=model,
        tokenizer=tokenizer,
        image_size=image_size,
        mean=tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        tower=vision_tower(model, image_size),
        visual=model.visual,
        encode_text=model.encode_text,
        family=family,
        embed_dim=int(config["model_cfg"]["embed_dim"]),
        checkpoint=checkpoint,
        trim_text=trim_text,
    )
    if unread:  # unread: its first forward reads them (`meddx.model.weights`)
        releasable(encoder, text_owner, text_names, text_entry, released=True)
        encoder.text_owner = text_owner
    return encoder
