"""Training the lung-field network (`meddx.anatomy.network`) from scratch, seeded, on CPU.

Every film is prepared once as the network sees it at inference (`network.prepare`: percentile-normalised,
squashed to 256 px) with its right/left labels resized by nearest neighbour. Each step draws a batch,
augments it on the fly (random affine: rotation ±10°, scale 0.85-1.15 per axis, shift ±8 %; gamma, contrast,
brightness and noise), and minimises MONAI's ``DiceCELoss``. AdamW with a cosine learning rate; every
``eval_every`` steps the mean lung Dice on the validation patients picks the checkpoint kept.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from meddx.anatomy import network
from meddx.train.anatomy_data import Film, lung_labels, read_grey


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of one training run."""

    seed: int = 0
    steps: int = 2000
    batch: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    eval_every: int = 100


def load_tensors(films: tuple[Film, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(N, 1, S, S)`` float32 and labels ``(N, S, S)`` int64 at the network's size."""
    xs, ys = [], []
    for film in films:
        xs.append(network.prepare(read_grey(film.image))[0])
        labels = lung_labels(read_grey(film.mask))
        ys.append(torch.from_numpy(cv2.resize(labels, (network.SIZE,) * 2, interpolation=cv2.INTER_NEAREST)))
    return torch.stack(xs), torch.stack(ys).long()


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (same for image and labels) and intensity changes for one batch."""
    n = x.shape[0]

    def uniform(low: float, high: float, size: int = n) -> torch.Tensor:
        return low + (high - low) * torch.rand(size, generator=gen)

    angle = uniform(-10, 10) * math.pi / 180
    sx, sy = uniform(0.85, 1.15), uniform(0.85, 1.15)
    tx, ty = uniform(-0.08, 0.08), uniform(-0.08, 0.08)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos / sx, -sin / sx, tx], 1), torch.stack([sin / sy, cos / sy, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-0.4, 0.4)).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    x = x * uniform(0.8, 1.2).view(n, 1, 1, 1) + uniform(-0.1, 0.1).view(n, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * uniform(0, 0.04).view(n, 1, 1, 1)
    return x, y[:, 0].long()


def mean_dice(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Dice of the two lungs at the network's size (validation)."""
    net.eval()
    dices = []
    with torch.inference_mode():
        for i in range(0, len(x), 16):
            pred = net(x[i : i + 16]).argmax(1)
            truth = y[i : i + 16]
            for label in (1, 2):
                p, t = pred == label, truth == label
                inter = (p & t).sum((1, 2)).float()
                total = (p.sum((1, 2)) + t.sum((1, 2))).float().clamp(min=1)
                dices.append(2 * inter / total)
    net.train()
    return float(torch.cat(dices).mean())


def fit(
    train: tuple[Film, ...],
    val: tuple[Film, ...],
    config: FitConfig,
    log: Callable[[str], None] = print,
    on_best: Callable[[dict], None] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train from scratch; returns the best network (by validation Dice) and a history. ``on_best`` gets
    each new best state (e.g. to keep it on disk while training goes on)."""
    from monai.losses import DiceCELoss

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    start = time.monotonic()
    x_train, y_train = load_tensors(train)
    x_val, y_val = load_tensors(val)
    log(f"loaded {len(train)} training and {len(val)} validation films in {time.monotonic() - start:.0f} s")
    net = network.build_network()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.steps)
    best, best_state, history = -1.0, None, []
    start = time.monotonic()
    for step in range(1, config.steps + 1):
        index = torch.randint(len(x_train), (config.batch,), generator=gen)
        x, y = augment(x_train[index], y_train[index], gen)
        loss = loss_fn(net(x), y[:, None])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % config.eval_every == 0 or step == config.steps:
            dice = mean_dice(net, x_val, y_val)
            history.append({"step": step, "loss": round(loss.item(), 4), "val_dice": round(dice, 4)})
            if dice > best:
                best, best_state = dice, {k: v.detach().clone() for k, v in net.state_dict().items()}
                if on_best is not None:
                    on_best(best_state)
            log(
                f"step {step}/{config.steps}: loss {loss.item():.4f}, validation Dice {dice:.4f} "
                f"(best {best:.4f}), {time.monotonic() - start:.0f} s"
            )
    assert best_state is not None
    net.load_state_dict(best_state)
    return net.eval(), {
        "best_val_dice": round(best, 4),
        "history": history,
        "train_seconds": round(time.monotonic() - start),
    }
