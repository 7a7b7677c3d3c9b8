"""transformers ``SiglipModel`` (MedSigLIP-448, XraySigLIP).

- Preprocessing: zero-pad to a square, bilinear resize to the vision config's size (448 for MedSigLIP),
  scale to [-1, 1] (mean = std = 0.5, or the repo's ``preprocessor_config.json``), as its card and Google's
  serving code do.
- Tokenizer: the repo's ``SiglipTokenizer`` (sentencepiece), padded to ``max_position_embeddings`` (64) and
  never trimmed: SigLIP's text pooling takes the *last* position, so the padding is part of the input it
  was trained on.
- Scoring: ``sigmoid`` (`meddx.model.zero_shot`): SigLIP is trained with a sigmoid loss on each image-text
  pair alone, so ``sigmoid(s * x.p + logit_bias)`` is the model's own probability that the film matches the
  finding's positive prompts. A two-way softmax against the negatives would drop the learned bias and ask
  the model for a ratio it was never trained to give.
- Pooling: no class token; the attention-pooling head (a learned probe attending over every patch token).
"""

from __future__ import annotations

from PIL import Image

from meddx.model.encoder import Encoder
from meddx.model.families.transformers_base import Recipe
from meddx.model.families.transformers_base import build as build_transformers
from meddx.model.spec import ResolvedModel

NAME = "siglip"
RECIPE = Recipe(
    family=NAME,
    scoring="sigmoid",
    trim_text=False,
    resample=Image.Resampling.BILINEAR,
    default_mean=(0.5, 0.5, 0.5),
    default_std=(0.5, 0.5, 0.5),
)


def build(resolved: ResolvedModel) -> Encoder:
    """Build a SigLIP model with its sentencepiece tokenizer and [-1, 1] preprocessing."""
    return build_transformers(resolved, RECIPE)
