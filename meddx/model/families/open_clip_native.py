"""open_clip with its own text transformer and bundled BPE tokenizer (whyxrayclip, OpenAI-style CLIPs).

The text tower is flattened onto the model (``token_embedding``, ``positional_embedding``, ``transformer``,
``ln_final``, ``text_projection``): those parameters stay unread until the first prompt is embedded.
Tokenizer: open_clip's ``SimpleTokenizer`` (works offline), padded with 0 to the full context (not trimmed:
open_clip adds the whole position embedding and causal mask). Scoring: ``softmax``, as for every
contrastive-softmax CLIP (`meddx.model.zero_shot`). Pooling: the tower's own (class token for a ViT-L/14).
"""

from __future__ import annotations

import torch

from meddx.model.encoder import Encoder
from meddx.model.families.common import build_failed, text_lengths
from meddx.model.families.open_clip_base import create_empty, finish
from meddx.model.spec import ResolvedModel

NAME = "open_clip"
TEXT_PARTS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def build(resolved: ResolvedModel) -> Encoder:
    """Build the open_clip model and its own tokenizer from the folder."""
    import open_clip

    resolved.weights  # noqa: B018 (raises the user's message when there are none)
    try:
        model = create_empty(resolved)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{resolved.folder}")
    except Exception as exc:
        raise build_failed(resolved, exc) from exc

    def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = tokenizer(texts)
        return tokens, text_lengths(tokens, 0)

    return finish(
        resolved,
        model,
        tokenize,
        family=NAME,
        text_owner=model,
        text_names=lambda: [n for n, _ in model.named_parameters() if n.startswith(TEXT_PARTS)],
        text_entry=model.token_embedding,
        trim_text=False,  # its position embedding and causal mask are built for the full context
    )
