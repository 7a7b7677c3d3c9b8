"""open_clip with a Hugging Face text tower (BiomedCLIP): the text tower's config and tokenizer are a second
folder (`meddx.model.spec.ResolvedModel.text_folder`).

Scoring: ``softmax`` (`meddx.model.zero_shot`): trained with CLIP's contrastive softmax, a similarity only
means something next to another text's, so each finding is the two-way softmax over its positive and
negative prompts. Pooling: the timm trunk's (class token for BiomedCLIP). Preprocessing: the config's mean
and std, bicubic resize after padding to a square.
"""

from __future__ import annotations

import torch

from meddx.errors import ModelError
from meddx.model.encoder import Encoder
from meddx.model.families.common import build_failed, text_lengths
from meddx.model.families.open_clip_base import create_empty, finish
from meddx.model.spec import TOKENIZER_VOCABULARIES, ResolvedModel, read_config

NAME = "open_clip_hf"


def build(resolved: ResolvedModel) -> Encoder:
    """Build the open_clip model and its Hugging Face tokenizer from resolved local folders."""
    from open_clip.tokenizer import HFTokenizer

    config = read_config(resolved.folder, resolved.spec)
    resolved.weights  # noqa: B018 (raises the user's message when there are none)
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
        model = create_empty(resolved, text_cfg=text_cfg, pretrained_text=False)
        hf = HFTokenizer(str(resolved.text_folder), context_length=text_cfg.get("context_length", 77))
    except Exception as exc:
        raise build_failed(resolved, exc) from exc
    pad_id = getattr(hf.tokenizer, "pad_token_id", 0) or 0

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = hf(texts)
        return tokens, text_lengths(tokens, pad_id)

    text = model.text
    return finish(
        resolved,
        model,
        tokenize,
        family=NAME,
        text_owner=text,
        text_names=lambda: [name for name, _ in text.named_parameters()],
        text_entry=text,
    )
