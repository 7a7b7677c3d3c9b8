"""The image tower's stem (patch embedding and every block but the last) in ONNX Runtime.

The stem is most of a forward and never needs gradients (`meddx.model.tower`), so the scoring pass runs it
in an inference runtime made for CPUs; the last block, the scores and the Grad-CAM maps stay in PyTorch.
Chosen by measurement (BiomedCLIP's ViT-B/16 with random weights, batch 1, 2 threads, one quiet 2-core
x86-64 machine, 2026-12-04; each variant's stem followed by the PyTorch tail, alternated over 12 rounds):

========================================  ==========  ===============================
stem                                      stem (s)    PyTorch tail after it (s)
========================================  ==========  ===============================
PyTorch                                   0.179       0.017
ONNX Runtime 1.31 fp32, default           0.147       0.033 (its threads still spin)
ONNX Runtime fp32, no spinning            0.166       0.018
ONNX Runtime fp32, spinning stopped       0.150       0.020  <- used
OpenVINO 2026.4 fp32 (from the same ONNX) 0.136       0.027
ONNX Runtime dynamic int8                 0.069       0.017
========================================  ==========  ===============================

All fp32 variants match PyTorch's tokens to 1e-5. OpenVINO's fp32 stem is 0.006 s faster end to end than
ONNX Runtime's with spinning stopped, not enough to carry a second runtime (180 MB installed; ONNX
Runtime, 68 MB, also runs the int8 stem, which OpenVINO ran at 0.194 s from the same quantised file).

``MEDDX_STEM`` (`meddx.config.Settings.stem`) picks the kind:

- ``fp32`` (default): exported once per model fingerprint into ``cache_dir/stem/``, checked against the
  PyTorch stem on one film when loaded (tokens within `FP32_TOLERANCE`), then used for every scoring pass.
- ``int8``: the fp32 export with dynamically quantised weights, used only if it passes an agreement gate
  on `GATE_FILMS` generated films: every finding's zero-shot probability within `GATE_MAX_DELTA` of the
  PyTorch stem's and the same top 3 on every film. A refusal logs one line saying why, and fp32 serves.
- ``torch``: no runtime; the PyTorch stem.

Anything that goes wrong (no onnxruntime, an architecture the exporter cannot trace, a failed check) logs
one line and leaves the PyTorch stem in place: the results are the same, only slower. The slow attribution
methods (Integrated Gradients, Gradient SHAP, Occlusion) always use the whole PyTorch tower.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddx.model.encoder import Encoder
from meddx.model.spec import one_line
from meddx.model.tower import StemModule, TowerTail, stem
from meddx.model.vision import OpenClipTower, TimmTower
from meddx.model.weights import ReleasableWeights, releasable, resident, restore
from meddx.model.zero_shot import TextDirections, zero_shot_probabilities
from meddx.no_telemetry import disable_onnxruntime_telemetry

log = logging.getLogger(__name__)

STEM_KINDS = ("fp32", "int8", "torch")
FORMAT = 1  # bump when the exported graph changes, so old cache files are not reused
OPSET = 17
FP32_TOLERANCE = 1e-3  # largest |token difference| to the PyTorch stem accepted from the fp32 export
GATE_FILMS = 6
GATE_MAX_DELTA = 0.02
GATE_TOP = 3
_LOCK = threading.Lock()


class RuntimeStem:
    """An ONNX Runtime session of the stem: ``__call__(pixels (N, 3, S, S)) -> tokens (N, L, C)``.

    Sessions may be run from several threads at once.
    """

    def __init__(self, path: Path, kind: str, threads: int) -> None:
        disable_onnxruntime_telemetry()  # before the import: no session file, device id or event queue
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.enable_cpu_mem_arena = False  # concurrent requests would grow an arena that is never shrunk
        # Spin between the graph's operators (faster), but not after a run: threads left spinning take the
        # cores from the PyTorch tail and maps that follow (measured: the tail ran 2x slower behind them).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.path = path
        self.kind = kind
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(pixels.detach().to(torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {"pixels": array})[0])

    def __repr__(self) -> str:
        return f"RuntimeStem({self.kind}, {self.path.name})"


def stem_path(encoder: Encoder, cache_dir: Path, kind: str) -> Path:
    """Where the exported stem of this model lives: one file per fingerprint, kind and export format."""
    return Path(cache_dir) / "stem" / f"{encoder.fingerprint}-v{FORMAT}-{kind}.onnx"


def _export_module(encoder: Encoder) -> StemModule:
    """The stem as a module, at the model's input size (a fixed-size copy when the tower resamples per call).

    A timm tower built for another size with ``dynamic_img_size`` resamples its position embedding on every
    forward, which the exporter cannot trace; the copy has it resampled once, to the same numbers.
    """
    tower = encoder.tower
    if isinstance(tower, TimmTower):
        trunk = tower.trunk
        grid = encoder.image_size // trunk.patch_embed.patch_size[0]
        if getattr(trunk, "dynamic_img_size", False) and tuple(trunk.patch_embed.grid_size) != (grid, grid):
            tower = copy.copy(tower)
            tower.trunk = tower.module = copy.deepcopy(trunk)
            tower.trunk.set_input_size(img_size=(encoder.image_size, encoder.image_size))
            tower.blocks = tower.trunk.blocks
    return StemModule(tower).eval()


def export_stem(encoder: Encoder, path: Path, *, threads: int = 1) -> str | None:
    """Export the fp32 stem to ``path`` (ONNX, dynamic batch); written only if its tokens match PyTorch's.

    Returns why it was not written (one line), or None.
    """
    restore_torch_stem(encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    example = torch.zeros(1, 3, encoder.image_size, encoder.image_size)
    try:
        # open_clip's own blocks take torch's fused attention fast path without gradients, which has no ONNX
        # form: trace them with gradients enabled (same numbers, the exportable path).
        grad = torch.enable_grad() if isinstance(encoder.tower, OpenClipTower) else torch.no_grad()
        with grad, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: the input size is fixed
            torch.onnx.export(
                _export_module(encoder),
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["pixels"],
                output_names=["tokens"],
                dynamic_axes={"pixels": {0: "batch"}, "tokens": {0: "batch"}},
                opset_version=OPSET,
            )
        problem = _check_fp32(encoder, RuntimeStem(tmp, "fp32", threads))
        if problem is None:
            os.replace(tmp, path)
        return problem
    finally:
        tmp.unlink(missing_ok=True)


class _QuantizerNotes(logging.Filter):
    """Drops the quantiser's per-tensor notes (it logs dozens of lines per block on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def quantize_stem(fp32: Path, path: Path) -> Path:
    """Dynamic int8 quantisation of the exported stem's weights (ONNX Runtime's `quantize_dynamic`)."""
    disable_onnxruntime_telemetry()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    root, quiet = logging.getLogger(), _QuantizerNotes()
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, path)
    finally:
        root.removeFilter(quiet)
        tmp.unlink(missing_ok=True)
    return path


def gate_films(encoder: Encoder, count: int = GATE_FILMS) -> torch.Tensor:
    """Fixed generated films, preprocessed (count, 3, S, S): soft chest-like shapes, blobs, noise, seeded."""
    rng = np.random.default_rng(18)
    side = encoder.image_size * 2
    yy, xx = np.mgrid[0:side, 0:side] / side
    films = []
    for n in range(count):
        body = 0.25 + 0.5 * np.exp(-((xx - 0.5) ** 2) / 0.08)  # bright mediastinum, darker sides
        lungs = sum(np.exp(-(((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.28) ** 2)) for cx in (0.3, 0.7))
        pixels = body - 0.3 * lungs + 0.05 * rng.standard_normal((side, side))
        for _ in range(n % 4):  # 0-3 bright blobs
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.12)
            pixels += 0.4 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        pixels = np.clip(pixels, 0, 1) * (0.6 + 0.4 * n / max(1, count - 1))  # exposure varies
        image = Image.fromarray((pixels * 255).astype(np.uint8)).convert("RGB")
        films.append(encoder.preprocess(image)[0])
    return torch.stack(films)


def agreement(
    encoder: Encoder,
    candidate: Callable[[torch.Tensor], torch.Tensor],
    directions: TextDirections,
    *,
    max_delta: float | None = None,
    top: int = GATE_TOP,
) -> str | None:
    """Why ``candidate`` may not replace the PyTorch stem, in one line; None when it agrees.

    It agrees when, on every `gate_films` film, every finding's zero-shot probability is within
    ``max_delta`` (default `GATE_MAX_DELTA`) of the PyTorch stem's and the ``top`` most probable findings
    are the same, in order.
    """
    max_delta = GATE_MAX_DELTA if max_delta is None else max_delta
    films = gate_films(encoder)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)
    with torch.inference_mode():
        reference = zero_shot_probabilities(tail(stem(encoder, films)))
        probabilities = zero_shot_probabilities(tail(candidate(films)))
    delta = (probabilities - reference).abs()
    worst = int(delta.argmax())
    film, finding = divmod(worst, delta.shape[1])
    if float(delta.max()) > max_delta:
        name = directions.findings[finding].id
        return (
            f"|Δp| {float(delta.max()):.2g} > {max_delta} for {name} on gate film {film + 1} of {len(films)}"
        )
    k = min(top, delta.shape[1])
    for n in range(len(films)):
        want, got = reference[n].topk(k).indices.tolist(), probabilities[n].topk(k).indices.tolist()
        if want != got:
            return f"top {k} differs on gate film {n + 1} of {len(films)}"
    return None


def _check_fp32(encoder: Encoder, runtime: RuntimeStem) -> str | None:
    pixels = gate_films(encoder, 1)
    with torch.inference_mode():
        difference = float((runtime(pixels) - stem(encoder, pixels)).abs().max())
    if not math.isfinite(difference) or difference > FP32_TOLERANCE:
        return f"its tokens differ from PyTorch's by {difference:.2g} (> {FP32_TOLERANCE})"
    return None


def load_runtime_stem(
    encoder: Encoder,
    kind: str,
    cache_dir: Path,
    *,
    directions: TextDirections | None = None,
    threads: int | None = None,
    release: bool = True,
) -> RuntimeStem | None:
    """Export (once per fingerprint), load and check the ``kind`` stem; None (and one log line) if unusable.

    The fp32 export is checked against the PyTorch stem when it is made (`FP32_TOLERANCE`) and only then
    written to the cache, so a cached file is loaded as it is. ``directions`` (all findings) are needed by
    the int8 agreement gate, run at every load; an int8 stem the gate refuses gives way to the fp32 one.
    With ``release``, the PyTorch stem's weights are dropped before the session is made
    (`release_torch_stem`): one copy of them in memory, read back if a whole-tower method needs them.
    """
    if kind not in STEM_KINDS:
        raise ValueError(f"unknown stem {kind!r}; choose one of {', '.join(STEM_KINDS)}")
    if kind == "torch":
        return None
    threads = threads or torch.get_num_threads()
    try:
        with _LOCK:  # two warm-ups of one model (tests, a reload) must not export the same file at once
            fp32 = stem_path(encoder, cache_dir, "fp32")
            if not fp32.is_file():
                log.info("exporting the image-tower stem to ONNX (once per model)")
                problem = export_stem(encoder, fp32, threads=threads)
                if problem:
                    log.warning("image-tower stem: PyTorch (the ONNX stem was refused: %s)", problem)
                    return None
            if kind == "int8":
                if directions is None:
                    raise ValueError("the int8 stem's agreement gate needs the findings' text directions")
                int8 = stem_path(encoder, cache_dir, "int8")
                if not int8.is_file():
                    quantize_stem(fp32, int8)
                quantized = RuntimeStem(int8, "int8", threads)
                refused = agreement(encoder, quantized, directions)
                if not refused:
                    if release:
                        release_torch_stem(encoder)
                    return quantized
                log.warning("image-tower stem: ONNX fp32 (int8 refused by the agreement gate: %s)", refused)
            if release:
                release_torch_stem(encoder)
            return RuntimeStem(fp32, "fp32", threads)
    except Exception as exc:  # any export or runtime failure: the PyTorch stem gives the same results
        log.warning("image-tower stem: PyTorch (no ONNX stem: %s: %s)", type(exc).__name__, one_line(exc))
        return None


def _stem_weights(encoder: Encoder) -> ReleasableWeights:
    tower = encoder.tower
    return releasable(encoder, tower.module, tower.stem_parameter_names, tower.entry)


def release_torch_stem(encoder: Encoder) -> None:
    """Drop the PyTorch stem's weights (the runtime stem holds its own copy).

    They are read back from the checkpoint before the patch embedding next runs (a forward pre-hook), i.e.
    on the first whole-tower use: Integrated Gradients, Gradient SHAP, Occlusion, image embeddings for
    training, or the PyTorch stem itself. Not while the PyTorch stem may be running (warm-up only).
    """
    _stem_weights(encoder).release()


def release_text_tower(encoder: Encoder) -> None:
    """Drop the text tower's weights once the vocabulary's text directions are cached (about 440 MB on
    BiomedCLIP). A custom label's prompts read them back from the checkpoint first (a forward pre-hook on
    the text tower): a second or two, once. Not while the text tower may be running (warm-up only).
    A model loaded with its text tower unread (`meddx.model.encoder.build_encoder`) has nothing to drop."""
    text = encoder.text_owner
    if text is not None:
        releasable(encoder, text, lambda: [name for name, _ in text.named_parameters()], text).release()


def torch_stem_resident(encoder: Encoder) -> bool:
    """Whether the PyTorch stem's weights are in memory."""
    return resident(encoder.tower.module)


def text_tower_resident(encoder: Encoder) -> bool:
    """Whether the text tower's weights are in memory."""
    return resident(encoder.text_owner)


def restore_torch_stem(encoder: Encoder) -> None:
    """Read the PyTorch stem's weights back now, if they were released."""
    restore(encoder.tower.module)


def attach_runtime_stem(
    encoder: Encoder,
    kind: str,
    cache_dir: Path,
    *,
    directions: TextDirections | None = None,
    threads: int | None = None,
    background: bool = False,
) -> threading.Thread | None:
    """Load the ``kind`` stem (`load_runtime_stem`) onto ``encoder`` for every later scoring pass.

    With ``background``, a stem that still has to be exported (a first start) is exported, checked and
    attached by a daemon thread, which is returned: the PyTorch stem serves until then, with the same
    results. A stem already in the cache is always loaded before this returns.
    """
    current = encoder.runtime_stem
    if encoder.device.type != "cpu":  # ONNX Runtime's CPU stem is a CPU optimisation: on a GPU, PyTorch's
        encoder.runtime_stem = None
        if kind != "torch":
            log.info("image-tower stem: PyTorch on %s (the ONNX Runtime stem is for the CPU)", encoder.device)
        return None
    if kind == "torch" or (current is not None and getattr(current, "kind", None) == kind):
        if kind == "torch":
            encoder.runtime_stem = None
        return None
    needed = ["fp32"] if kind == "fp32" else ["fp32", "int8"]

    def attach(release: bool) -> None:
        runtime = load_runtime_stem(
            encoder, kind, cache_dir, directions=directions, threads=threads, release=release
        )
        if runtime is not None:  # the session's first run allocates its buffers: at start, not on a request
            runtime(torch.zeros(1, 3, encoder.image_size, encoder.image_size))
        encoder.runtime_stem = runtime
        log.info("image-tower stem: %s", f"ONNX Runtime {runtime.kind}" if runtime else "PyTorch")

    if background and not all(stem_path(encoder, cache_dir, k).is_file() for k in needed):
        # Requests may be running the PyTorch stem meanwhile: its weights stay (released at the next start).
        def export_quietly() -> None:
            # Lowest CPU priority for this thread (Linux sets it per thread, by thread id): requests first.
            if sys.platform == "linux":
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            attach(False)

        thread = threading.Thread(target=export_quietly, name="meddx-stem-export", daemon=True)
        thread.start()
        return thread
    attach(True)
    return None
