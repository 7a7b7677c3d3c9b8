"""The image tower of every model family as one sequence of transformer layers (`VisionTower`).

Scoring (`meddx.model.tower`), the inference-runtime stem (`meddx.model.stem`) and the attention maps work
through this protocol, so none of them needs to know the family. Three implementations cover the four
families, chosen by the tower's structure (never by the model's name):

- `TimmTower`: an open_clip model with a timm ViT trunk (BiomedCLIP): class token or mean pooling, then
  open_clip's projection head;
- `OpenClipTower`: open_clip's own ``VisionTransformer`` (whyxrayclip's ViT-L/14 and any CLIP trained with
  open_clip): class token, ``ln_post`` and ``proj``;
- `HFTower`: transformers ``CLIPVisionModel`` (class token, ``post_layernorm``, ``visual_projection``) and
  ``SiglipVisionModel`` (no class token; ``post_layernorm`` then the attention-pooling head, whose probe
  attends over every patch token).
"""

from __future__ import annotations

import abc
import math
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

    blocks: Sequence[nn.Module]
    prefix: int
    grid: int
    patch: int
    pooling: str

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens entering ``blocks[0]`` (patch embedding, class token, position embedding, pre-norm)."""

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``blocks[index]`` applied to ``tokens`` (eval mode, no attention mask): (N, L, C) -> (N, L, C)."""

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`block` computed with an explicit softmax, and its attention probabilities (N, H, L, L)."""

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens leaving a layer -> the unnormalised image embedding (N, D), as the family's encoder does."""

    def pool_with_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`pool`, plus the attention-pooling probe's per-head probabilities (N, H, 1, L), else None."""


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax attention over heads: q (N, H, Lq, d), k and v (N, H, L, d) -> (N, Lq, H*d), probs."""
    probabilities = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
    out = probabilities @ v
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1), probabilities


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, channels = x.shape
    return x.view(n, length, heads, channels // heads).transpose(1, 2)


def _mha_attention(
    attn: nn.MultiheadAttention, query: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-first ``nn.MultiheadAttention`` (packed in-projection, no mask) with explicit probabilities."""
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    heads = attn.num_heads
    q = _heads(nn.functional.linear(query, w_q, b_q), heads)
    k = _heads(nn.functional.linear(tokens, w_k, b_k), heads)
    v = _heads(nn.functional.linear(tokens, w_v, b_v), heads)
    out, probabilities = _attend(q, k, v, q.shape[-1] ** -0.5)
    return attn.out_proj(out), probabilities


class _Tower(abc.ABC):
    """What every implementation shares: the owning module (its parameters are the tower's) and the grid."""

    module: nn.Module
    blocks: Sequence[nn.Module]
    prefix: int
    grid: int
    patch: int
    pooling: str
    entry: nn.Module
    """The first module a forward runs (the patch embedding): released stem weights come back before it."""

    def pool_with_attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.pool(tokens), None

    def stem_parameter_names(self) -> list[str]:
        """Parameters (relative to ``module``) only the stem uses: the embedding, all blocks but the last."""
        last = {id(p) for p in self.blocks[-1].parameters()} | {id(p) for p in self._head_parameters()}
        return [name for name, p in self.module.named_parameters() if id(p) not in last]

    @abc.abstractmethod
    def _head_parameters(self) -> list[nn.Parameter]:
        """The parameters of the final norm, pooling and projection."""

    @abc.abstractmethod
    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """`VisionTower.block`."""

    @abc.abstractmethod
    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """`VisionTower.pool`."""


class TimmTower(_Tower):
    """An open_clip ``TimmModel`` image tower (a timm ViT trunk and open_clip's projection head)."""

    def __init__(self, visual: nn.Module, image_size: int) -> None:
        trunk = visual.trunk
        self.visual = visual
        self.trunk = trunk
        self.module = trunk
        self.blocks = trunk.blocks
        self.prefix = int(trunk.num_prefix_tokens)
        self.patch = int(trunk.patch_embed.patch_size[0])
        self.grid = image_size // self.patch
        self.entry = trunk.patch_embed
        pool = getattr(trunk, "global_pool", "")
        self.pooling = "class_token" if pool == "token" else "attention_pool" if pool == "map" else "mean"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks[index](tokens)

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.blocks[index]
        attn = block.attn
        h = block.norm1(tokens)
        n, length, _ = h.shape
        qkv = attn.qkv(h).reshape(n, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        y, probabilities = _attend(q, k, v, attn.scale)
        y = attn.proj(attn.norm(y))
        x = tokens + block.ls1(y)
        return x + block.ls2(block.mlp(block.norm2(x))), probabilities

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual.head(self.trunk.forward_head(self.trunk.norm(tokens)))

    def _head_parameters(self) -> list[nn.Parameter]:
        trunk = self.trunk
        heads = [trunk.norm, getattr(trunk, "fc_norm", None), getattr(trunk, "attn_pool", None), trunk.head]
        return [p for m in heads if isinstance(m, nn.Module) for p in m.parameters()]


class OpenClipTower(_Tower):
    """open_clip's own ``VisionTransformer``: class token, ``ln_pre``, blocks, ``ln_post``, ``proj``."""

    def __init__(self, visual: nn.Module, image_size: int) -> None:
        if getattr(visual, "attn_pool", None) is not None:
            raise ModelError("open_clip towers with an attention-pooling head (CoCa) are not supported.")
        self.visual = visual
        self.module = visual
        self.blocks = visual.transformer.resblocks
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.prefix = 1
        self.patch = int(visual.conv1.kernel_size[0])
        self.grid = image_size // self.patch
        self.entry = visual.conv1
        self.pooling = "class_token" if visual.pool_type == "tok" else "mean"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(pixels)

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        if self.batch_first:
            return self.blocks[index](tokens)
        return self.blocks[index](tokens.transpose(0, 1)).transpose(0, 1)

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.blocks[index]
        h = block.ln_1(tokens)
        y, probabilities = _mha_attention(block.attn, h, h)
        x = tokens + block.ls_1(y)
        return x + block.ls_2(block.mlp(block.ln_2(x))), probabilities

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.visual._pool(tokens)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def _head_parameters(self) -> list[nn.Parameter]:
        return [
            *self.visual.ln_post.parameters(),
            *([self.visual.proj] if self.visual.proj is not None else []),
        ]


class HFTower(_Tower):
    """A transformers CLIP or SigLIP vision model (``model.vision_model``) with the model's projection."""

    def __init__(self, model: nn.Module) -> None:
        vision = model.vision_model
        self.model = model
        self.vision = vision
        self.module = vision
        self.blocks = vision.encoder.layers
        config = vision.config
        self.patch = int(config.patch_size)
        self.grid = int(config.image_size) // self.patch
        self.entry = vision.embeddings.patch_embedding
        self.head = getattr(vision, "head", None) if getattr(vision, "use_head", True) else None
        self.projection = getattr(model, "visual_projection", None)
        self.prefix = 1 if hasattr(vision.embeddings, "class_embedding") else 0
        self.pooling = "attention_pool" if self.head is not None else "class_token" if self.prefix else "mean"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.vision.embeddings(pixels)
        pre = getattr(self.vision, "pre_layrnorm", None)
        return pre(x) if pre is not None else x

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks[index](tokens, None)

    def block_with_attention(self, index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.blocks[index]
        attn = layer.self_attn
        h = layer.layer_norm1(tokens)
        heads = attn.num_heads
        q, k, v = (_heads(proj(h), heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        y, probabilities = _attend(q, k, v, attn.scale)
        x = tokens + attn.out_proj(y)
        return x + layer.mlp(layer.layer_norm2(x)), probabilities

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool_with_attention(tokens, probabilities=False)[0]

    def pool_with_attention(
        self, tokens: torch.Tensor, *, probabilities: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.head is None:
            pooled = tokens[:, 0] if self.prefix else tokens.mean(dim=1)
            pooled = self.vision.post_layernorm(pooled)
            return (self.projection(pooled) if self.projection is not None else pooled), None
        x = self.vision.post_layernorm(tokens)
        head = self.head
        probe = head.probe.expand(x.shape[0], -1, -1)
        if probabilities:
            pooled, attention = _mha_attention(head.attention, probe, x)
        else:
            pooled, attention = head.attention(probe, x, x, need_weights=False)[0], None
        pooled = pooled + head.mlp(head.layernorm(pooled))
        return pooled[:, 0], attention

    def _head_parameters(self) -> list[nn.Parameter]:
        modules = [self.vision.post_layernorm, self.head]
        return [p for m in modules if m is not None for p in m.parameters()]


def vision_tower(model: nn.Module, image_size: int) -> VisionTower:
    """The `VisionTower` of a loaded model, picked by the structure of its image tower."""
    if hasattr(model, "vision_model") and hasattr(model.vision_model, "encoder"):
        return HFTower(model)
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens")
    if trunk is not None and all(hasattr(trunk, name) for name in needed):
        return TimmTower(visual, image_size)
    if visual is not None and hasattr(visual, "transformer") and hasattr(visual, "_embeds"):
        return OpenClipTower(visual, image_size)
    raise ModelError("meddx needs a ViT image tower (timm, open_clip or transformers CLIP/SigLIP).")


class PooledTower(nn.Module):
    """Pixels -> unnormalised image embedding through a `VisionTower` (the families without their own
    image module): ``forward((N, 3, S, S)) -> (N, D)``, differentiable."""

    def __init__(self, tower: VisionTower, owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner
        self.tower = tower

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.tower.embed(pixels)
        for index in range(len(self.tower.blocks)):
            x = self.tower.block(index, x)
        return self.tower.pool(x)


def patch_grid(tokens: torch.Tensor, prefix: int) -> int:
    """Patches per side of a square token grid after ``prefix`` leading tokens."""
    return math.isqrt(tokens.shape[1] - prefix)
