"""What one map costs with each attribution method on the loaded model: measured, never assumed.

Two sources, the better one wins:

- **measured runs**: every map the pipeline draws records its seconds per map (`MapCosts.record`); the
  estimate is the mean of the last few.
- **measured units at warm-up** (`measure_units`): forward+backward passes of the image tower in a batch
  of 1 and of 2, and one forward pass, on the loaded model, through the methods' own code (Integrated
  Gradients with one and two steps; Occlusion with one window). A slow method's first estimate is its
  passes in its own batches (`batched`: a fixed cost per batch plus a cost per sample): ``n_steps`` in
  batches of ``internal_batch_size`` for Integrated Gradients, ``n_samples`` in one batch for Gradient
  SHAP, one forward per window (plus the unoccluded one) for Occlusion. The page says "estimated" until a
  real map has been drawn. `cached_units` measures them at the first warm-up on a
  machine and keeps them in the cache folder for the next starts (about a second saved), keyed by the model,
  the thread count, the CPU and the PyTorch build that were measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RECENT = 5
"""Measured maps averaged per method."""
UNITS_VERSION = 2
"""What `measure_units` measures; cached units of another version are measured again (2: batches of 1, 2)."""


@dataclass(frozen=True)
class Estimate:
    """Seconds per map for one method, and whether they come from real maps (else from warm-up units)."""

    seconds_per_map: float
    measured: bool


class MapCosts:
    """Seconds per map, per method, for the model this process serves (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, deque[float]] = {}
        self._units: dict[str, float] = {}

    def record(self, method: str, seconds: float, maps: int) -> None:
        """``maps`` maps of ``method`` took ``seconds`` in all."""
        if maps > 0:
            with self._lock:
                self._runs.setdefault(method, deque(maxlen=RECENT)).append(seconds / maps)

    def set_units(self, units: dict[str, float]) -> None:
        """Per-method seconds per map estimated from warm-up units (`measure_units`)."""
        with self._lock:
            self._units = dict(units)

    def estimate(self, method: str) -> Estimate | None:
        """The best known seconds per map for ``method``; None if nothing was measured."""
        with self._lock:
            runs = self._runs.get(method)
            if runs:
                return Estimate(sum(runs) / len(runs), True)
            if method in self._units:
                return Estimate(self._units[method], False)
        return None

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._units.clear()


COSTS = MapCosts()
"""The process's map costs (the pipeline records into it; the page and the CLI read it)."""


def measure_units(encoder, scored, *, target: int = 0) -> dict[str, float]:
    """Per-map seconds of the slow methods, from one backward and one forward pass timed on ``scored``.

    The fast methods (`meddx.explain.methods.FAST_METHODS`) are timed as they are: one map each.

    Returns:
        ``{method: seconds per map}`` for integrated_gradients, gradient_shap, occlusion and the fast methods.
    """
    from meddx.explain.maps import GradientShapMethod, IntegratedGradientsMethod, OcclusionMethod, film_maps
    from meddx.explain.methods import FAST_METHODS

    fast = {}
    for method in sorted(FAST_METHODS):
        tick = time.perf_counter()
        film_maps(encoder, scored, [target], method=method)
        fast[method] = time.perf_counter() - tick

    def backward(batch: int) -> float:
        tick = time.perf_counter()
        film_maps(
            encoder, scored, [target], method="integrated_gradients", n_steps=batch, internal_batch_size=batch
        )
        return time.perf_counter() - tick

    backward(1)  # the first backward pass allocates; time the next ones
    one, two = backward(1), backward(2)
    tick = time.perf_counter()
    # One window covering the input: one unoccluded and one occluded forward.
    film_maps(encoder, scored, [target], method="occlusion", max_windows=1, perturbations_per_eval=1)
    forward = (time.perf_counter() - tick) / 2
    occlusion = OcclusionMethod()
    side = encoder.image_size
    windows = (side // occlusion.window(side)) ** 2
    integrated, shap = IntegratedGradientsMethod(), GradientShapMethod()
    return {
        "integrated_gradients": batched(one, two, integrated.n_steps, _ig_batch(encoder, integrated.n_steps)),
        "gradient_shap": batched(one, two, shap.n_samples, shap.n_samples),
        "occlusion": (windows + 1) * forward,
        **fast,
    }


def _ig_batch(encoder, steps: int) -> int:
    """The batch Integrated Gradients runs in on this encoder's device (`meddx.explain.gpu_batch`); on a GPU
    estimated as all steps at once."""
    from meddx.explain.gpu_batch import CPU_BATCH

    return CPU_BATCH if encoder.device.type == "cpu" else steps


def batched(one: float, two: float, samples: int, batch: int) -> float:
    """Seconds for ``samples`` forward+backward passes run ``batch`` at a time, from the seconds of one
    batch of 1 and one batch of 2: a fixed cost per batch plus a cost per sample, ``t(b) = fixed + b *
    each``. Batching makes a pass far cheaper than ``samples`` single ones (Integrated Gradients' 50 steps
    in batches of 10 took about half of 50 single passes on BiomedCLIP's architecture)."""
    each = max(two - one, one / 4)  # timing noise never makes a sample free
    fixed = max(one - each, 0.0)
    batches = -(-samples // max(batch, 1))
    return batches * (fixed + min(batch, samples) * each)


def _machine() -> str:
    """This machine's CPU model and count, and the PyTorch build: what the measured seconds depend on."""
    import torch

    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:  # Linux
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        model = names[0] if names else model
    return f"{platform.machine()}|{model}|{os.cpu_count()}|torch {torch.__version__}"


def cached_units(
    measure: Callable[[], dict[str, float]], *, model: str, threads: int, cache_dir: Path | None
) -> dict[str, float]:
    """``measure()``'s units, read from ``cache_dir/costs/`` when this model (its fingerprint), thread count
    and machine were measured before; else measured now and written there."""
    if cache_dir is None:
        return measure()
    key = hashlib.sha256(f"{model}|{threads}|{_machine()}|units {UNITS_VERSION}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "costs" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError):  # not measured here yet, or unreadable: measure again
        units = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(units, dict) and units and all(isinstance(v, float) and v > 0 for v in units.values()):
            return units
    units = measure()
    with contextlib.suppress(OSError):  # a read-only cache: measured again at the next start
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(units), encoding="utf-8")
        os.replace(tmp, path)
    return units


def describe(seconds: float) -> str:
    """A duration in words a person reads at a glance: "about 2 s", "about 40 s", "about 3 min"."""
    if seconds < 1.5:
        return "about a second"
    if seconds < 90:
        return f"about {max(2, round(seconds)):d} s"
    return f"about {round(seconds / 60):d} min"
