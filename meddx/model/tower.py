"""The image tower split in two at its last transformer block: ``stem`` and ``TowerTail``.

Scoring and the fast attribution map share one pass: the stem (patch embedding and all blocks but the
last) runs once without gradients, and the tail (last block, norm, pooling, projection and the finding
scores) runs on its output with gradients. A Grad-CAM map then costs one backward through one block, not
a second full forward.

The tail exposes ``grid``: the patch tokens entering the last block, reshaped to (N, C, H, W) so that
Captum's layer methods can hook them (hooking the block's *output* gives an all-zero map, because the
pooled CLS token never reads the patch tokens after the last block).

Every family's tower goes through the `meddx.model.vision.VisionTower` protocol (embed, blocks, pool), so
nothing here knows the family. For a timm tower that pools the class token (BiomedCLIP), only that token's
output of the last block is ever read, so the tail computes just that (`class_token_block`): the patch
tokens still give the keys and values of its attention, but its query, attention output and MLP run for one
token instead of 197. Same numbers, about a third of the block's work, forward and backward.

Where the split is, and how to move it: `stem` takes ``keep_last`` (default 1), the number of final blocks
it leaves out, so a method that needs the tokens entering an earlier block (e.g. a Grad-CAM over the last
few blocks) asks ``stem(encoder, pixels, keep_last=k)`` and runs those blocks itself. `run_stem` is the
scoring pass's stem: the inference-runtime stem (`meddx.model.stem`) when one is attached to the encoder,
which always splits at the last block (``keep_last=1``), else the PyTorch one. `StemModule` is the PyTorch
stem as a module, for export.
"""

from __future__ import annotations

import math

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn

from meddx.model.encoder import Encoder
from meddx.model.vision import TimmTower, VisionTower
from meddx.model.zero_shot import zero_shot_logits


def _stem_tokens(tower: VisionTower, pixels: torch.Tensor, keep_last: int) -> torch.Tensor:
    depth = len(tower.blocks)
    if not 1 <= keep_last <= depth:
        raise ValueError(f"keep_last must be between 1 and {depth}, got {keep_last}")
    x = tower.embed(pixels)
    for index in range(depth - keep_last):
        x = tower.block(index, x)
    return x


def stem(encoder: Encoder, pixels: torch.Tensor, *, keep_last: int = 1) -> torch.Tensor:
    """Tokens entering the ``keep_last``-th block from the end (PyTorch), for pixels (N, 3, S, S).

    The default, 1, is the tokens entering the last block: what `TowerTail` takes.
    """
    return _stem_tokens(encoder.tower, pixels, keep_last)


def run_stem(encoder: Encoder, pixels: torch.Tensor) -> torch.Tensor:
    """Tokens entering the last block: through the encoder's runtime stem if one is attached, else PyTorch."""
    runtime = encoder.runtime_stem
    return runtime(pixels) if runtime is not None else stem(encoder, pixels)


class StemModule(nn.Module):
    """The PyTorch stem (tokens entering the last block) as a module holding the tower's own submodules."""

    def __init__(self, tower: VisionTower) -> None:
        super().__init__()
        self.owner = tower.module  # registered, so that the exporter sees the weights as parameters
        self.tower = tower

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, L, C) tokens for (N, 3, S, S) pixels."""
        return _stem_tokens(self.tower, pixels, 1)


def class_token_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)[:, :1]`` for a timm ViT block in eval mode, computing only what the first token needs."""
    attn = block.attn
    h = block.norm1(x)
    n, length, _ = h.shape
    qkv = attn.qkv(h).reshape(n, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
    y = nn.functional.scaled_dot_product_attention(q, k, v)
    y = attn.norm(y.transpose(1, 2).reshape(n, 1, attn.attn_dim))
    if attn.gate is not None:
        y = y * attn.gate(h[:, :1]).sigmoid()
    first = x[:, :1] + block.ls1(attn.proj(y))
    return first + block.ls2(block.mlp(block.norm2(first)))


def class_token_pooled(trunk: nn.Module) -> bool:
    """Whether only the class token leaves a timm trunk's last block (and that block is a plain timm one)."""
    block = trunk.blocks[-1]
    return (
        getattr(trunk, "global_pool", None) == "token"
        and getattr(trunk, "cls_token", None) is not None  # the pooled first token is the class token
        and getattr(trunk, "attn_pool", None) is None
        and type(block) is Block
        and type(block.attn) is Attention
    )


class TowerTail(nn.Module):
    """Last block to finding logits: ``forward(tokens) -> (N, F)`` for the given text directions.

    ``bias`` is the family's logit bias (`meddx.model.zero_shot.TextDirections.bias`): 0 for the two-way
    softmax of CLIP-like models, ``logit_bias`` for SigLIP's sigmoid.
    """

    def __init__(
        self, encoder: Encoder, difference: torch.Tensor, logit_scale: float, bias: float = 0.0
    ) -> None:
        super().__init__()
        self.tower = encoder.tower
        self.owner = self.tower.module
        self.prefix = int(self.tower.prefix)
        self.class_token_only = isinstance(self.tower, TimmTower) and class_token_pooled(self.tower.trunk)
        self.grid = nn.Identity()
        difference = difference.detach().to(encoder.device, copy=True)
        self.register_buffer("difference", difference, persistent=False)
        self.logit_scale = float(logit_scale)
        self.bias = float(bias)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings from stem tokens."""
        n, length, channels = tokens.shape
        h = w = math.isqrt(length - self.prefix)  # inputs are square (padded), so the patch grid is too
        prefix, patches = tokens[:, : self.prefix], tokens[:, self.prefix :]
        grid = self.grid(patches.transpose(1, 2).reshape(n, channels, h, w))
        x = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
        block = self.tower.blocks[-1]
        if self.class_token_only and not block.training:
            x = class_token_block(block, x)
        else:
            x = self.tower.block(len(self.tower.blocks) - 1, x)
        x = self.tower.pool(x)
        return nn.functional.normalize(x, dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, F) zero-shot logits."""
        return zero_shot_logits(self.embed(tokens), self.difference, self.logit_scale, self.bias)
