"""Captum maps of finding scores, as `FilmMap`s to put back on the original film (`meddx.explain.overlay`).

What is attributed is a finding's zero-shot logit, ``s * (x.p - x.n)`` (see `meddx.model.zero_shot`). Every
method is a small class configured in ``__init__`` (MONAI style) whose ``__call__`` builds a Captum
attribution object and calls ``.attribute(inputs, target=..., baselines=...)``; `METHODS` names them:

- ``gradcam`` (default): `LayerGradCam` on ``tail.grid``, the patch tokens entering the last block, reusing
  the stem tokens of the scoring pass: one last-block forward and backward for all targets together.
- ``integrated_gradients``: `IntegratedGradients` on the pixels, through the whole image tower, from a black
  baseline.
- ``gradient_shap``: `GradientShap` on the pixels, baselines drawn from black films with Gaussian noise.
- ``occlusion``: `Occlusion` of patch-sized windows (enlarged when needed to bound the number of forwards).
- ``legrad`` and ``rollout``: attention maps on the scoring pass's tokens through the model's
  `meddx.model.vision.VisionTower` (`meddx.explain.attention`).

`film_maps` returns each map as a `FilmMap` (the square model-input map and the geometry), so that
regions, overlays and previews ask for the size they need instead of building a 3000 x 3000 map. On the
film (``FilmMap.on_film()``) a map is float32 at the original image's size, ``(geometry.height,
geometry.width)``, and holds **positive evidence only**: where the map is high, the pixels raised the
finding's score. Pixel-level attributions are first summed (signed) over the three colour channels, which
for a grayscale film replicated into RGB is the attribution of the gray value itself; then the positive part
is kept and divided by its maximum over the whole model input (padding included, so a map that peaks in the
padding does not reach 1 on the film). A map with no positive evidence is all zeros. The square model-input
map is upsampled bilinearly to the padded square's side and the padding is cropped off: the exact inverse of
`meddx.model.geometry.PadToSquare`.

Thread safety: nothing here registers a hook on a shared module. Grad-CAM hooks ``tail.grid``, which
belongs to the per-request `TowerTail`; the pixel methods only call autograd on the shared image tower
(``torch.autograd.grad`` with respect to the inputs; parameter ``.grad`` fields are never written).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from captum.attr import GradientShap, IntegratedGradients, LayerGradCam, Occlusion
from torch import nn

from meddx.explain.attention import LeGradMethod, RolloutMethod
from meddx.explain.gpu_batch import internal_batch
from meddx.explain.methods import DEFAULT_METHOD
from meddx.explain.overlay import FilmMap
from meddx.model.encoder import Encoder
from meddx.model.scored import ScoredImage
from meddx.model.zero_shot import zero_shot_logits

_TINY = 1e-8  # a map whose positive peak is below this (in logit units) has no positive evidence
_RELATIVE_TINY = 1e-6  # ... or below this fraction of its largest magnitude (numerical noise)


class ImageScorer(nn.Module):
    """Pixels to finding logits through the whole image tower: ``forward((N, 3, S, S)) -> (N, F)``."""

    def __init__(
        self, visual: nn.Module, difference: torch.Tensor, logit_scale: float, bias: float = 0.0
    ) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("difference", difference.detach().clone(), persistent=False)
        self.logit_scale = float(logit_scale)
        self.bias = float(bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, F) zero-shot logits (`meddx.model.zero_shot.zero_shot_logits`)."""
        embeddings = nn.functional.normalize(self.visual(pixels), dim=-1)
        return zero_shot_logits(embeddings, self.difference, self.logit_scale, self.bias)


@dataclass(frozen=True)
class AttributionInputs:
    """What a method may use; targets are finding indices (columns of the logits), one map each.

    Attributes:
        pixels: the preprocessed film (1, 3, S, S), or None when only ``tokens`` are available.
        tokens: the stem tokens of the scoring pass (1, L, C), or None.
        tail: the per-request `meddx.model.tower.TowerTail` (tokens -> logits, ``grid`` to hook), or None.
        scorer: pixels -> logits (an `ImageScorer`), or None.
        baseline: the "absent" film (1, 3, S, S): black, normalised like the input.
        targets: finding indices to explain.
        tower: the image tower as a `meddx.model.vision.VisionTower` (the attention methods), or None.
    """

    pixels: torch.Tensor | None
    tokens: torch.Tensor | None
    tail: nn.Module | None
    scorer: nn.Module | None
    baseline: torch.Tensor
    targets: list[int]
    tower: object | None = None

    def batch(self, value: torch.Tensor | None, name: str) -> torch.Tensor:
        """One copy of ``value`` per target: (k, ...)."""
        if value is None:
            raise ValueError(f"this attribution method needs {name}")
        return value.expand(len(self.targets), *value.shape[1:])


class AttributionMethod(Protocol):
    """A configured method: ``__call__(inputs) -> (k, g, g)`` signed maps covering the model input square."""

    def __call__(self, inputs: AttributionInputs) -> torch.Tensor: ...


class GradCamMethod:
    """Grad-CAM on the patch tokens entering the last block: a (k, grid, grid) map, already non-negative."""

    def __call__(self, inputs: AttributionInputs) -> torch.Tensor:
        tail = inputs.tail
        if tail is None:
            raise ValueError("gradcam needs the tower tail of the scoring pass")
        tokens = inputs.batch(inputs.tokens, "the stem tokens")
        cam = LayerGradCam(tail, tail.grid)
        return cam.attribute(tokens, target=inputs.targets, relu_attributions=True)[:, 0]


def _channel_sum(attributions: torch.Tensor) -> torch.Tensor:
    """(k, 3, S, S) pixel attributions to (k, S, S): signed sum over channels (the gray value's share)."""
    return attributions.sum(dim=1)


class IntegratedGradientsMethod:
    """Integrated Gradients from the black baseline; ``n_steps`` forwards+backwards per target, in batches of
    ``internal_batch_size`` (None: by device, `meddx.explain.gpu_batch`)."""

    def __init__(self, *, n_steps: int = 50, internal_batch_size: int | None = None) -> None:
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size

    def __call__(self, inputs: AttributionInputs) -> torch.Tensor:
        pixels = inputs.batch(inputs.pixels, "the preprocessed pixels")
        batch = self.internal_batch_size or internal_batch(inputs.scorer, pixels, self.n_steps * len(pixels))
        attributions = IntegratedGradients(inputs.scorer).attribute(
            pixels,
            target=inputs.targets,
            baselines=inputs.baseline,
            n_steps=self.n_steps,
            internal_batch_size=batch,
        )
        return _channel_sum(attributions)


_GLOBAL_RANDOM = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """NumPy's and PyTorch's global generators seeded for one call and restored after it; one such call at
    a time in the process (a concurrent one waits), so that neither sees the other's draws."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with _GLOBAL_RANDOM, torch.random.fork_rng(devices=devices):
        state = np.random.get_state()
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


class GradientShapMethod:
    """GradientShap with baselines drawn from black films plus Gaussian noise.

    Captum draws the baselines and path points from NumPy's and PyTorch's global generators; they are seeded
    for the call (`seeded`), so the same film gives the same map every time, whatever ran before.

    Args:
        n_samples: random points on the baseline-to-input paths, per target.
        noise: standard deviation of the noise added to the black baselines, in normalised input units
            (0.3 is about 8% of the black-to-white range with CLIP's std of ~0.27).
        n_baselines: how many noisy black films to draw baselines from (seeded, so always the same ones).
    """

    def __init__(self, *, n_samples: int = 10, noise: float = 0.3, n_baselines: int = 8) -> None:
        self.n_samples = n_samples
        self.noise = noise
        self.n_baselines = n_baselines

    def __call__(self, inputs: AttributionInputs) -> torch.Tensor:
        pixels = inputs.batch(inputs.pixels, "the preprocessed pixels")
        generator = torch.Generator().manual_seed(0)
        shape = (self.n_baselines, 1, *pixels.shape[2:])
        noise = torch.randn(shape, generator=generator).to(pixels.device)  # the same draws on any device
        baselines = inputs.baseline + self.noise * noise
        with seeded(0, pixels.device):
            attributions = GradientShap(inputs.scorer).attribute(
                pixels, baselines=baselines, n_samples=self.n_samples, target=inputs.targets
            )
        return _channel_sum(attributions)


class OcclusionMethod:
    """Occlusion with black windows; window = stride = one patch, enlarged by whole patches if needed.

    The cost is one forward per window position and target; the window grows by whole patches, keeping a
    tiling of the input, until at most ``max_windows`` positions remain (a 14x14-patch BiomedCLIP input
    gets 32-px windows: 49 forwards instead of 196).

    Args:
        patch: the window side in model-input pixels (the ViT patch size).
        max_windows: the most window positions per target.
        perturbations_per_eval: occluded copies per forward batch.
    """

    def __init__(self, *, patch: int = 16, max_windows: int = 64, perturbations_per_eval: int = 8) -> None:
        self.patch = patch
        self.max_windows = max_windows
        self.perturbations_per_eval = perturbations_per_eval

    def window(self, size: int) -> int:
        """The window side (= stride) for a ``size`` x ``size`` input: whole patches that tile the input."""
        grid = size // self.patch
        fits = (m for m in range(1, grid + 1) if grid % m == 0 and (grid // m) ** 2 <= self.max_windows)
        return next(fits, grid) * self.patch

    def __call__(self, inputs: AttributionInputs) -> torch.Tensor:
        pixels = inputs.batch(inputs.pixels, "the preprocessed pixels")
        window = self.window(pixels.shape[-1])
        attributions = Occlusion(inputs.scorer).attribute(
            pixels,
            sliding_window_shapes=(pixels.shape[1], window, window),
            strides=(pixels.shape[1], window, window),
            baselines=inputs.baseline,
            target=inputs.targets,
            perturbations_per_eval=self.perturbations_per_eval,
        )
        return _channel_sum(attributions)


METHODS: dict[str, Callable[..., AttributionMethod]] = {  # in the order of the method cards (menu order)
    "gradcam": GradCamMethod,
    "legrad": LeGradMethod,
    "rollout": RolloutMethod,
    "integrated_gradients": IntegratedGradientsMethod,
    "gradient_shap": GradientShapMethod,
    "occlusion": OcclusionMethod,
}
TOWER_METHODS = frozenset({"legrad", "rollout"})  # read the tower's layers (`meddx.model.vision`)


def _method(name: str) -> Callable[..., AttributionMethod]:
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def black_baseline(encoder: Encoder) -> torch.Tensor:
    """The normalised value of an all-black film (1, 3, S, S): what padding and "absent" look like."""
    mean = torch.tensor(encoder.mean, dtype=torch.float32, device=encoder.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, dtype=torch.float32, device=encoder.device).view(1, 3, 1, 1)
    return (-mean / std).expand(1, 3, encoder.image_size, encoder.image_size)


def attribute(
    encoder: Encoder, scored: ScoredImage, targets: list[int], *, method: str = DEFAULT_METHOD, **options
) -> torch.Tensor:
    """The raw signed maps of the given findings' scores over the model input: (k, g, g), any g.

    Arguments as for `film_maps`, which turns these into maps on the film.
    """
    factory = _method(method)
    tail = scored.tail
    # Tensors made under inference_mode (the scoring pass, cached text features) cannot be saved for
    # backward: work on clones made outside it.
    with torch.inference_mode(False), torch.enable_grad():
        scorer = ImageScorer(
            encoder.visual, tail.difference.clone(), tail.logit_scale, getattr(tail, "bias", 0.0)
        )
        inputs = AttributionInputs(
            pixels=scored.pixels.detach().clone().reshape(1, *scored.pixels.shape[-3:]),
            tokens=scored.tokens.detach().clone(),
            tail=tail,
            scorer=scorer,
            baseline=black_baseline(encoder).clone(),
            targets=list(targets),
            tower=encoder.tower if method in TOWER_METHODS else None,
        )
        return factory(**options)(inputs).detach()


def film_maps(
    encoder: Encoder,
    scored: ScoredImage,
    targets: list[int],
    *,
    method: str = DEFAULT_METHOD,
    **options,
) -> list[FilmMap]:
    """Maps of the given findings' scores, one per target, each ready to be put on the film at any size.

    Args:
        encoder: the loaded model.
        scored: the scoring pass (`meddx.model.scored.score_image`): its pixels (for the pixel methods), its
            stem tokens and tail (Grad-CAM, and the text directions and scale every method attributes) and
            its geometry (to put the maps back on the film).
        targets: finding indices (positions in the scored findings) to explain.
        method: a key of `METHODS`.
        **options: the method's settings (e.g. ``n_steps=16`` for integrated_gradients).

    Returns:
        `FilmMap`s whose ``on_film()`` is a float32 map of shape (geometry.height, geometry.width) in
        [0, 1]: positive evidence only, 1 at the strongest evidence in the model input; all zeros where
        nothing raised the score.

    Raises:
        ValueError: unknown method.
    """
    if not targets:
        _method(method)
        return []
    maps = attribute(encoder, scored, targets, method=method, **options)
    return [FilmMap(square, scored.geometry) for square in normalise(maps)]


def normalise(maps: torch.Tensor) -> list[np.ndarray]:
    """Signed square maps (k, g, g) to positive evidence in [0, 1]: the positive part over its maximum.

    A map whose positive peak is numerically nothing becomes all zeros.
    """
    out = []
    for signed in maps.float().cpu().numpy():
        positive = np.maximum(signed, 0.0)
        peak = float(positive.max())
        if not np.isfinite(peak) or peak <= max(_TINY, _RELATIVE_TINY * float(np.abs(signed).max())):
            out.append(np.zeros_like(positive, dtype=np.float32))
        else:
            out.append((positive / peak).astype(np.float32))
    return out
