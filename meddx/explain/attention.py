"""Attention maps of finding scores on any `meddx.model.vision.VisionTower`: LeGrad and Chefer's rollout.

Both run the last ``layers`` transformer layers again on the scoring pass's own tokens (``layers=1``: the
stem tokens the scoring pass kept, `meddx.model.scored.ScoredImage.tokens`, so no stem runs again; more
layers: the tokens entering the first of them, from the pixels through the tower without gradients), with
`VisionTower.block_with_attention` so that the attention probabilities are tensors of the graph. The score
is the finding's zero-shot logit computed as the scoring tail computes it (`meddx.model.zero_shot`).

All targets share that one forward: the backward runs once per target in a batch (``is_grads_batched``).
Nothing is hooked and no module is changed; the tokens are clones, so the scores are untouched.

Shapes: ``k`` targets, ``H`` heads, ``L = prefix + grid**2`` tokens. Both methods return (k, grid, grid)
maps, min-max normalised per map to [0, 1] (all zeros where the map is flat): high = relevant to a
**higher** score; they carry no negative evidence (gradients are clipped at zero before anything else).

- ``legrad`` (Bousselham et al., ICCV 2025; the released code at github.com/WalBouss/LeGrad, MIT):
  for each of the last ``layers`` layers ``l``, that layer's output tokens are pooled through the model's
  own head (`VisionTower.pool_with_attention`) and scored: ``s_l``. Its gradient with respect to that
  layer's attention probabilities ``A_l`` (k, H, L, L) is clipped at zero, averaged over heads and over
  query rows (for a class-token head only the class token's row is non-zero, so this is that row over L),
  and its patch columns are that layer's map; the maps are summed over layers and min-max normalised.
  On an attention-pooling head (SigLIP) the gradient is taken, as LeGrad does, with respect to the
  pooling probe's attention over the tokens (k, H, 1, L), the one query playing the class token's role.
- ``rollout`` (Chefer, Gur and Wolf, CVPR 2021, "Generic attention-model explainability"): one score (the
  last layer's, the real output), ``Ā_l = mean_h((dS/dA_l ⊙ A_l)⁺)`` for each of the last ``layers``
  layers, rolled out as ``R = I; R ← R + Ā_l R``; the map is the pooled readout's row of ``R`` over the
  patch columns: the class token's row, the mean of the patch rows for mean pooling, or
  ``mean_h((dS/da ⊙ a)⁺) R`` for an attention-pooling head's probabilities ``a``.
"""

from __future__ import annotations

import torch
from torch import nn

from meddx.model.vision import VisionTower
from meddx.model.zero_shot import zero_shot_logits


def _tower(inputs) -> VisionTower:
    if inputs.tower is None:
        raise ValueError("this attribution method needs the model's image tower")
    if inputs.tail is None:
        raise ValueError("this attribution method needs the tower tail of the scoring pass")
    return inputs.tower


def entering_tokens(tower: VisionTower, inputs, layers: int) -> torch.Tensor:
    """The tokens entering the ``layers``-th layer from the end (1, L, C), without gradients.

    One layer: the scoring pass's stem tokens, reused. More: the pixels through ``embed`` and the blocks
    before (the stem with ``keep_last=layers``).
    """
    depth = len(tower.blocks)
    if not 1 <= layers <= depth:
        raise ValueError(f"layers must be between 1 and {depth}, got {layers}")
    if layers == 1 and inputs.tokens is not None:
        return inputs.tokens.detach()
    if inputs.pixels is None:
        raise ValueError("this attribution method needs the preprocessed pixels for more than one layer")
    with torch.no_grad():
        x = tower.embed(inputs.pixels)
        for index in range(depth - layers):
            x = tower.block(index, x)
    return x


def _logits(inputs, embedding: torch.Tensor) -> torch.Tensor:
    """(1, F) zero-shot logits of an unnormalised embedding (1, D), as the scoring tail computes them."""
    tail = inputs.tail
    unit = nn.functional.normalize(embedding, dim=-1)
    return zero_shot_logits(unit, tail.difference, tail.logit_scale, getattr(tail, "bias", 0.0))


def _one_hot(inputs, logits: torch.Tensor) -> torch.Tensor:
    """(k, 1, F): each target's score as a batch of backward seeds."""
    seeds = torch.zeros(len(inputs.targets), *logits.shape, dtype=logits.dtype, device=logits.device)
    seeds[torch.arange(len(inputs.targets)), 0, torch.tensor(inputs.targets)] = 1.0
    return seeds


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map (k, ...) scaled to [0, 1] by its own minimum and maximum; a flat map becomes zeros."""
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp(min=torch.finfo(flat.dtype).tiny), 0.0)
    return scaled.reshape(maps.shape)


class LeGradMethod:
    """LeGrad over the last ``layers`` layers (module docstring): (k, grid, grid) maps in [0, 1].

    Cost: ``layers`` layers forward once for all targets, and per target a backward from each layer's pooled
    score to that layer's attention (the attention-output and MLP part of one layer, and the pooling head).
    """

    def __init__(self, *, layers: int = 1) -> None:
        self.layers = layers

    def __call__(self, inputs) -> torch.Tensor:
        tower = _tower(inputs)
        x = entering_tokens(tower, inputs, self.layers).clone().requires_grad_(True)
        depth, total = len(tower.blocks), 0
        for index in range(depth - self.layers, depth):
            x, probabilities = tower.block_with_attention(index, x)
            embedding, pooled = tower.pool_with_attention(x)
            logits = _logits(inputs, embedding)
            wrt = probabilities if pooled is None else pooled
            (grad,) = torch.autograd.grad(
                logits, wrt, grad_outputs=_one_hot(inputs, logits), is_grads_batched=True, retain_graph=True
            )  # (k, 1, H, Q, L): Q = L queries, or the probe's 1
            relevance = grad[:, 0].clamp(min=0).mean(dim=(1, 2))  # heads, then query rows: (k, L)
            total = total + relevance[:, tower.prefix :]
        return min_max(total.detach().reshape(-1, tower.grid, tower.grid))


class RolloutMethod:
    """Chefer's gradient-weighted attention rollout, last ``layers`` layers: (k, grid, grid) in [0, 1].

    Cost: ``layers`` layers forward once for all targets, and per target one backward through them.
    """

    def __init__(self, *, layers: int = 1) -> None:
        self.layers = layers

    def __call__(self, inputs) -> torch.Tensor:
        tower = _tower(inputs)
        x = entering_tokens(tower, inputs, self.layers).clone().requires_grad_(True)
        depth, attentions = len(tower.blocks), []
        for index in range(depth - self.layers, depth):
            x, probabilities = tower.block_with_attention(index, x)
            attentions.append(probabilities)
        embedding, pooled = tower.pool_with_attention(x)
        logits = _logits(inputs, embedding)
        wrt = attentions + ([] if pooled is None else [pooled])
        grads = torch.autograd.grad(logits, wrt, grad_outputs=_one_hot(inputs, logits), is_grads_batched=True)
        k, length = len(inputs.targets), x.shape[1]
        rollout = torch.eye(length, device=x.device).expand(k, length, length)
        for attention, grad in zip(attentions, grads, strict=False):
            weighted = (grad[:, 0] * attention).clamp(min=0).mean(dim=1)  # (k, L, L)
            rollout = rollout + weighted @ rollout
        if pooled is not None:
            probe = (grads[-1][:, 0] * pooled).clamp(min=0).mean(dim=1)  # (k, 1, L)
            readout = (probe @ rollout)[:, 0]
        elif tower.pooling == "class_token":
            readout = rollout[:, 0]
        else:
            readout = rollout[:, tower.prefix :].mean(dim=1)
        relevance = readout[:, tower.prefix :]
        return min_max(relevance.detach().reshape(-1, tower.grid, tower.grid))
