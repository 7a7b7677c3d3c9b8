"""The image tower split in two at its last transformer block: ``stem`` and ``TowerTail``.

Scoring and the fast attribution map share one pass: the stem (patch embedding and all blocks but the
last) runs once without gradients, and the tail (last block, norm, pooling, projection and the finding
scores) runs on its output with gradients. A Grad-CAM map then costs one backward through one block, not
a second full forward.

The tail exposes ``grid``: the patch tokens entering the last block, reshaped to (N, C, H, W) so that
Captum's layer methods can hook them (hooking the block's *output* gives an all-zero map, because the
pooled CLS token never reads the patch tokens after the last block).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from meddx.encoder import Encoder
from meddx.errors import ModelError


def _trunk(encoder: Encoder) -> nn.Module:
    trunk = getattr(encoder.visual, "trunk", None)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens")
    if trunk is None or not all(hasattr(trunk, name) for name in needed):
        raise ModelError("meddx needs an open_clip model with a timm ViT image tower (like BiomedCLIP).")
    return trunk


def stem(encoder: Encoder, pixels: torch.Tensor) -> torch.Tensor:
    """Tokens entering the last block, for preprocessed pixels (N, 3, S, S)."""
    trunk = _trunk(encoder)
    x = trunk.patch_embed(pixels)
    x = trunk._pos_embed(x)
    x = trunk.patch_drop(x)
    x = trunk.norm_pre(x)
    for block in trunk.blocks[:-1]:
        x = block(x)
    return x


class TowerTail(nn.Module):
    """Last block to finding logits: ``forward(tokens) -> (N, F)`` for the given text directions."""

    def __init__(self, encoder: Encoder, difference: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.trunk = _trunk(encoder)
        self.head = encoder.visual.head
        self.prefix = int(self.trunk.num_prefix_tokens)
        self.grid = nn.Identity()
        self.register_buffer("difference", difference.detach().clone(), persistent=False)
        self.logit_scale = float(logit_scale)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings from stem tokens."""
        n, length, channels = tokens.shape
        h = w = math.isqrt(length - self.prefix)  # inputs are square (padded), so the patch grid is too
        prefix, patches = tokens[:, : self.prefix], tokens[:, self.prefix :]
        grid = self.grid(patches.transpose(1, 2).reshape(n, channels, h, w))
        x = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
        x = self.trunk.blocks[-1](x)
        x = self.trunk.norm(x)
        x = self.head(self.trunk.forward_head(x))
        return nn.functional.normalize(x, dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, F) zero-shot logits."""
        return self.logit_scale * self.embed(tokens) @ self.difference.T
