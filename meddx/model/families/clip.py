"""transformers ``CLIPModel`` (XrayCLIP, PubMedCLIP).

- Preprocessing: zero-pad to a square (not CLIP's centre crop, which would cut off lung edges), bicubic
  resize to the vision config's size, the repo's mean and std (OpenAI's by default).
- Tokenizer: the repo's CLIP BPE tokenizer; padding trimmed to the longest prompt (the causal text model
  pools the end-of-text token, so padding after it changes nothing).
- Scoring: ``softmax`` (`meddx.model.zero_shot`): CLIP is trained with a contrastive softmax over texts, so
  a similarity only means something next to another text's; each finding is the two-way softmax over its
  positive and negative prompts.
- Pooling: the class token, ``post_layernorm``, ``visual_projection``.
"""

from __future__ import annotations

from PIL import Image

from meddx.model.encoder import Encoder
from meddx.model.families.transformers_base import Recipe
from meddx.model.families.transformers_base import build as build_transformers
from meddx.model.spec import ResolvedModel

NAME = "clip"
RECIPE = Recipe(
    family=NAME,
    scoring="softmax",
    trim_text=True,
    resample=Image.Resampling.BICUBIC,
    default_mean=(0.48145466, 0.4578275, 0.40821073),
    default_std=(0.26862954, 0.26130258, 0.27577711),
)


def build(resolved: ResolvedModel) -> Encoder:
    """Build a CLIP model with its BPE tokenizer and CLIP preprocessing."""
    return build_transformers(resolved, RECIPE)
