"""The image tower of any model family as a sequence of transformer layers (`VisionTower`).

The attention maps (`meddx.explain.attention`) are written against this protocol only. This file holds the
protocol and its implementation for timm ViTs (BiomedCLIP's ``encoder.visual.trunk``, and the tiny test
towers), pooling their class token or the mean of their patch tokens; the other families implement the
same protocol (see the encoder-families work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from meddx.errors import ModelError


@runtime_checkable
class VisionTower(Protocol):
    """The image tower of any model family, as a sequence of transformer layers.

    Pixels: the family's preprocessed input (N, 3, S, S). Tokens: (N, L, C) = ``prefix`` leading non-patch
    tokens (a class token, register tokens) then ``grid * grid`` patch tokens in row-major order.
    """

    blocks: Sequence[nn.Module]  # the transformer layers, input to output
    prefix: int  # leading non-patch tokens: 1 for a class-token ViT (BiomedCLIP, CLIP), 0 for SigLIP
    grid: int  # patches per side of the square input
    patch: int  # patch side in input pixels
    pooling: str  # "class_token" | "attention_pool" | "mean": how `pool` reads the last layer's tokens

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens entering ``blocks[0]`` (patch embedding, class token, position embedding, pre-norm)."""
        ...

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``blocks[index]`` applied to ``tokens`` (eval mode, no attention mask): (N, L, C) -> (N, L, C)."""
        ...

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same output as `block` (to 1e-5), computed with an explicit softmax, and that softmax's
        attention probabilities (N, H, L, L) (rows = queries, columns = keys): a tensor in the autograd graph
        through which the output depends on them, so that d(score)/d(probabilities) exists (LeGrad,
        Chefer)."""
        ...

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens leaving the last layer -> the image embedding (N, D), NOT normalised: final norm, the
        family's pooling (class token / attention-pooling head / mean) and projection, exactly as the family's
        own image encoder does (same numbers to 1e-5). Applied to an earlier layer's tokens it gives that
        layer's embedding (LeGrad pools every layer's tokens through the model's own head)."""
        ...

    def pool_with_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `pool`, plus, for an attention-pooling head (SigLIP), its probe's per-head attention
        probabilities over the tokens (N, H, 1, L) in the autograd graph; None for class-token / mean
        pooling."""
        ...


class TimmTower:
    """A `VisionTower` over an open_clip ``TimmModel`` (``visual.trunk`` a timm ViT, ``visual.head`` the
    projection), for a trunk that pools its class token (BiomedCLIP) or the mean of its patch tokens.

    `block_with_attention` runs timm's own non-fused attention path step by step: ``attn.attn_drop``'s input
    is the softmax, the tensor timm exposes as the probabilities (its fused kernel never forms it). Nothing
    is hooked or switched on the shared modules, so concurrent requests are safe.
    """

    def __init__(self, visual: nn.Module) -> None:
        trunk = getattr(visual, "trunk", None)
        needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens")
        if trunk is None or not all(hasattr(trunk, name) for name in needed):
            raise ModelError("meddx needs an open_clip model with a timm ViT image tower (like BiomedCLIP).")
        if getattr(trunk, "attn_pool", None) is not None:
            raise ModelError("this timm tower pools with an attention head, which this tower does not read.")
        self.visual = visual
        self.trunk = trunk
        self.blocks = list(trunk.blocks)
        self.prefix = int(trunk.num_prefix_tokens)
        self.patch = int(trunk.patch_embed.patch_size[0])
        size = getattr(visual, "image_size", None) or trunk.patch_embed.img_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.grid = size // self.patch  # the input's grid (a timm tower may be built for another size)
        self.pooling = "class_token" if trunk.global_pool == "token" else "mean"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks[index](tokens)

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.blocks[index]
        attn = getattr(block, "attn", None)
        if not all(hasattr(attn, name) for name in ("qkv", "q_norm", "k_norm", "attn_drop", "proj", "scale")):
            raise ModelError(f"block {index} of this timm tower is not a plain ViT block; no attention map.")
        h = block.norm1(tokens)
        n, length, _ = h.shape
        gate = attn.gate(h).sigmoid() if getattr(attn, "gate", None) is not None else None
        qkv = attn.qkv(h).reshape(n, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        probabilities = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn.attn_drop(probabilities) @ v).transpose(1, 2).reshape(n, length, -1)
        y = attn.norm(y)
        if gate is not None:
            y = y * gate
        x = tokens + block.drop_path1(block.ls1(attn.proj_drop(attn.proj(y))))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return x, probabilities

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual.head(self.trunk.forward_head(self.trunk.norm(tokens)))

    def pool_with_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.pool(tokens), None


def tower_of(visual: nn.Module) -> VisionTower:
    """The `VisionTower` of an image tower (today: open_clip's timm ViTs)."""
    return TimmTower(visual)
