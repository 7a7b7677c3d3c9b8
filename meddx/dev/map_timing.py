"""Time per map of each attribution method on BiomedCLIP's architecture (random weights), against Grad-CAM.

The machine may be shared, so each method is timed alternately with a Grad-CAM map in the same round
(`time_maps`): a method's cost is the median over rounds of its seconds per map, and of its ratio to the
Grad-CAM map timed just before it. A plain forward of the image tower is timed the same way, so that costs
also read as "forwards per map" (the issue's budget: 0.5). One map = one finding on one film, after the
scoring pass (whose stem tokens the cheap methods reuse).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddx.model.encoder import Encoder

BASELINE = "gradcam"


@dataclass(frozen=True)
class MapTiming:
    """Median seconds per map, its ratio to the Grad-CAM map timed beside it, and forwards per map."""

    method: str
    seconds: float
    vs_gradcam: float
    forwards: float
    rounds: int


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def time_maps(encoder: Encoder, methods: Sequence[str], *, rounds: int = 3) -> list[MapTiming]:
    """Time one map per method and round on one synthetic film, each beside a Grad-CAM map."""
    from meddx.dev.attribution_check import method_and_options, nodule_directions
    from meddx.dev.tiny import synthetic_film
    from meddx.explain.maps import ImageScorer, film_maps
    from meddx.model.scored import score_image

    directions = nodule_directions(encoder)
    film = synthetic_film(np.random.default_rng(0), size=encoder.image_size, blob=True)
    scored = score_image(encoder, Image.fromarray(film.pixels).convert("RGB"), directions)
    scorer = ImageScorer(encoder.visual, directions.difference, directions.logit_scale)
    pixels = scored.pixels[None]

    def forward() -> None:
        with torch.inference_mode():
            scorer(pixels)

    def one_map(name: str):
        method, options = method_and_options(name)
        return lambda: film_maps(encoder, scored, [0], method=method, **options)

    forward(), one_map(BASELINE)()  # warm-up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ["forward", *methods]}
    for _ in range(rounds):
        for name in ["forward", *methods]:
            baseline = _seconds(one_map(BASELINE))
            seconds = _seconds(forward if name == "forward" else one_map(name))
            samples[name].append((seconds, seconds / baseline))
    forward_s = float(np.median([s for s, _ in samples.pop("forward")]))
    return [
        MapTiming(
            method=name,
            seconds=float(np.median([s for s, _ in values])),
            vs_gradcam=float(np.median([r for _, r in values])),
            forwards=float(np.median([s for s, _ in values])) / forward_s,
            rounds=rounds,
        )
        for name, values in samples.items()
    ] + [MapTiming("forward", forward_s, float("nan"), 1.0, rounds)]


def run_timing(methods: Sequence[str], *, rounds: int = 3, size: str = "biomedclip") -> list[MapTiming]:
    """Build a random model of BiomedCLIP's architecture in a temp folder and `time_maps` on it."""
    from meddx.dev.tiny import make_tiny_model
    from meddx.model.encoder import build_encoder
    from meddx.model.spec import ModelSpec, resolve

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / size, size=size, seed=0)
        encoder = build_encoder(resolve(ModelSpec("local-dir", str(folder))))
        return time_maps(encoder, methods, rounds=rounds)


def format_timing(timings: Sequence[MapTiming], *, threads: int) -> str:
    """The timings as a plain-text table."""
    lines = [
        f"time per map, BiomedCLIP architecture (random weights), {threads} threads; each method timed "
        "alternately with a Grad-CAM map in the same round (median over rounds)",
        f"{'method':<22}{'s/map':>10}{'x gradcam':>10}{'forwards':>10}",
    ]
    for t in timings:
        lines.append(f"{t.method:<22}{t.seconds:>10.3f}{t.vs_gradcam:>10.2f}{t.forwards:>10.2f}")
    return "\n".join(lines)
