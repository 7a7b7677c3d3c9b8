"""How many films a pixel method (Integrated Gradients) pushes through the tower at once, by device.

On the CPU a batch of `CPU_BATCH` (what the cost model was measured with, `meddx.explain.cost`). On a CUDA
device as many as fit in `MEMORY_SHARE` of the memory free at that moment, from the memory one film's
forward and backward took, measured once per model on that device: large towers (MedSigLIP at 448 px) need
several GB per film with gradients, small ones fit all of a map's steps in one batch.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

CPU_BATCH = 10
MEMORY_SHARE = 0.5
_PER_ITEM: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def fitting_batch(free_bytes: int, per_item_bytes: int, most: int) -> int:
    """The most items (1 to ``most``) whose ``per_item_bytes`` fit in `MEMORY_SHARE` of ``free_bytes``."""
    fits = int(free_bytes * MEMORY_SHARE) // max(1, per_item_bytes)
    return max(1, min(most, fits))


def per_item_bytes(scorer: nn.Module, pixels: torch.Tensor) -> int:
    """GPU memory one film's forward and backward through ``scorer`` allocates (measured once per scorer's
    image tower on its device)."""
    key = getattr(scorer, "visual", scorer)
    if key not in _PER_ITEM:
        device = pixels.device
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        one = pixels[:1].detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(scorer(one)[:, 0].sum(), one)
        del grad
        torch.cuda.synchronize(device)
        _PER_ITEM[key] = max(1, torch.cuda.max_memory_allocated(device) - before)
    return _PER_ITEM[key]


def internal_batch(scorer: nn.Module, pixels: torch.Tensor, most: int) -> int:
    """Films per forward for a pixel method on ``pixels``' device (at most ``most``)."""
    if pixels.device.type != "cuda":
        return max(1, min(most, CPU_BATCH))
    free, _ = torch.cuda.mem_get_info(pixels.device)
    return fitting_batch(free, per_item_bytes(scorer, pixels), most)
