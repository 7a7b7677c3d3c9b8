"""Faithfulness measures for attribution maps, independent of how the maps were made.

- **Deletion and insertion** (Petsiuk et al., 2018, "RISE"), defined so that they test the explainer and
  not the eraser: the model's patches are ranked by the map (most-attributed first). *Deletion* replaces
  them one by one by the same patch of a **blurred copy of the film** (`blurred`: a Gaussian of sigma
  `BLUR_SIGMA_PATCHES` = 2 patch sides, reflected at the border) and records the finding's probability
  after each step; *insertion* starts from the blurred film and puts the original patches back in the
  same order. The black-patch variant replaces patches by black (insertion onto a black film).
- **Pointing game** (`pointing_hit`) and **energy in box** (`energy_in_box`) on a known box.
- **Model randomisation** (Adebayo et al., 2018): `randomised_copy` re-initialises the image tower;
  `rank_correlation` compares the maps.
- `paired_interval`: the mean per-film difference between a method's AUC and random order's, with a
  seeded bootstrap 95 % interval.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

from meddx.model.encoder import Encoder
from meddx.model.geometry import Geometry

BLUR_SIGMA_PATCHES = 2.0  # the blurred film's Gaussian sigma, in patch sides
CURVE_STEPS = 20  # deletion and insertion curves are sampled at 21 evenly spaced patch counts
BOOTSTRAP = 1000


def pointing_hit(heatmap: np.ndarray, box: tuple[int, int, int, int], *, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies in the box, or within ``tolerance`` pixels of it.

    The box is (x0, y0, x1, y1), end-exclusive. Zhang et al. (2018) count a hit within 15 px. An all-zero
    map misses.
    """
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    x0, y0, x1, y1 = box
    dx, dy = max(x0 - x, 0, x - (x1 - 1)), max(y0 - y, 0, y - (y1 - 1))
    return bool(heatmap.max() > 0 and dx * dx + dy * dy <= tolerance * tolerance)


def energy_in_box(heatmap: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """The share of the map's (non-negative) sum inside the box (x0, y0, x1, y1), end-exclusive; 0 for an
    all-zero map."""
    total = float(heatmap.sum())
    x0, y0, x1, y1 = box
    return float(heatmap[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0


def paired_interval(
    values: np.ndarray, reference: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values - reference`` (paired, one per film) and its bootstrap 95 % percentile interval."""
    differences = np.asarray(values, float) - np.asarray(reference, float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)


def randomised_copy(encoder: Encoder, *, seed: int = 0, std: float = 0.02) -> Encoder:
    """A copy of the encoder whose image tower is re-initialised as timm initialises a ViT.

    Every weight matrix, convolution and embedding is redrawn from N(0, std²); LayerNorm gains are set to 1
    and every bias to 0. The text tower is untouched.
    """
    from meddx.model.weights import restore

    restore(encoder.text_owner)  # a text tower not read yet would be copied empty, and never read back
    randomised = encoder.with_model(copy.deepcopy(encoder.model))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in randomised.visual.modules():  # the image module of any family
            for name, parameter in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    parameter.fill_(1.0)
                elif parameter.ndim > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
                else:
                    parameter.zero_()
    return randomised


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between two maps (0 when either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def patch_order(heatmap: np.ndarray, geometry: Geometry, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Patch indices (row-major on the model's grid), most-attributed first; ties in random order."""
    canvas = np.zeros((geometry.side, geometry.side), np.float32)
    canvas[
        geometry.pad_top : geometry.pad_top + geometry.height,
        geometry.pad_left : geometry.pad_left + geometry.width,
    ] = heatmap
    per_patch = cv2.resize(canvas, (grid, grid), interpolation=cv2.INTER_AREA).ravel()
    return np.lexsort((rng.random(per_patch.size), -per_patch))


def deletion_curve(
    scorer: torch.nn.Module,
    pixels: torch.Tensor,
    baseline: torch.Tensor,
    order: np.ndarray,
    *,
    steps: int | None = None,
) -> np.ndarray:
    """The finding's probability as the patches in ``order`` are replaced by ``baseline``'s.

    Sampled after 0, 1, ..., all patches, or at ``steps`` + 1 evenly spaced counts (one batch either way).
    """
    grid = round(len(order) ** 0.5)
    patch = pixels.shape[-1] // grid
    counts = np.arange(len(order) + 1) if steps is None else np.linspace(0, len(order), steps + 1).round()
    batch = pixels.reshape(1, *pixels.shape[-3:]).repeat(len(counts), 1, 1, 1)
    for rank, index in enumerate(order, start=1):
        row, col = divmod(int(index), grid)
        window = (slice(None), slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch))
        first = int(np.searchsorted(counts, rank))  # the samples with at least ``rank`` patches replaced
        batch[first:][(slice(None), *window)] = baseline[0][window]
    with torch.inference_mode():
        return torch.sigmoid(scorer(batch)[:, 0]).numpy()


def blurred(pixels: torch.Tensor, patch: int, *, sigma_patches: float = BLUR_SIGMA_PATCHES) -> torch.Tensor:
    """A blurred copy of a preprocessed film (1, 3, S, S): Gaussian, sigma ``sigma_patches * patch`` pixels.

    Blurring is linear, so blurring the normalised input equals normalising the blurred film.
    """
    sigma = sigma_patches * patch
    planes = pixels.reshape(-1, *pixels.shape[-2:]).detach().float().cpu().numpy()
    out = [cv2.GaussianBlur(p, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for p in planes]
    return torch.from_numpy(np.stack(out)).reshape(1, *pixels.shape[-3:])


def insertion_curve(
    scorer: torch.nn.Module, pixels: torch.Tensor, start: torch.Tensor, order: np.ndarray, **options
) -> np.ndarray:
    """The finding's probability as the film's patches in ``order`` are put back onto ``start``."""
    return deletion_curve(scorer, start, pixels.reshape(1, *pixels.shape[-3:]), order, **options)


def curve_area(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


CURVES = ("deletion", "insertion", "black_deletion", "black_insertion")


def curve_areas(
    scorer: torch.nn.Module, pixels: torch.Tensor, blur: torch.Tensor, black: torch.Tensor, order: np.ndarray
) -> dict[str, float]:
    """The four AUCs of one film and one patch order (`CURVES`): blurred and black, deletion and insertion."""
    steps = CURVE_STEPS
    return {
        "deletion": curve_area(deletion_curve(scorer, pixels, blur, order, steps=steps)),
        "insertion": curve_area(insertion_curve(scorer, pixels, blur, order, steps=steps)),
        "black_deletion": curve_area(deletion_curve(scorer, pixels, black, order, steps=steps)),
        "black_insertion": curve_area(insertion_curve(scorer, pixels, black, order, steps=steps)),
    }
