"""The device table (``python -m meddx bench --device cuda``): each architecture on the CPU and on the
device in the same run, so the two columns meet the same machine.

For BiomedCLIP, MedSigLIP-448 and whyxrayclip (real architectures, random weights, built here; ``--quick``:
the tiny test model), each device in a child process of its own (one's memory never inflates the other's):

- ``forward_s``: ``Encoder.embed_images`` of one film (pixels in from the host, embedding back), median;
- ``analysis_s``: the full ``analyze`` of one film with notes and Grad-CAM maps and regions for the top 3,
  median after warm-up (mixed precision where warm-up kept it);
- ``ig50_s``: one Integrated Gradients map with 50 steps (batched by device memory on a GPU);
- ``embed_films_per_s``: films per second through the image tower at batch sizes 1, 8 and 32 (what
  ``batch-embed``, ``train`` and ``eval`` do, and the shared scoring pass of a ``batch`` actor's
  ``--batch-size`` films; the rest of each film's analysis runs one film at a time);
- ``gpu_peak_mb``: the most GPU memory PyTorch allocated (None on the CPU); ``peak_rss_mb`` the process's.

The stem is PyTorch's on both devices (``MEDDX_STEM`` overrides it on the CPU), so the columns compare the
same work.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meddx.dev import REPO_ROOT
from meddx.dev.bench_families import ARCHITECTURES

BATCH_SIZES = (1, 8, 32)
NOTES = "58-year-old smoker, cough for 3 weeks; no pneumothorax."


def _median_s(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_in_process(
    spec: str, device: str, cache_dir: Path, film: Path, *, threads: int, rounds: int, cpu_ig: bool = True
) -> dict:
    """Every number for one model on one device (this process)."""
    import torch
    from PIL import Image

    from meddx.config import Settings
    from meddx.device import describe
    from meddx.io import load_study
    from meddx.pipeline import analyze, warm_up

    torch.set_num_threads(threads)
    stem = os.environ.get("MEDDX_STEM", "torch")
    settings = Settings(
        model=spec, threads=threads, cache_dir=cache_dir, stem=stem, device=device, hold_back=False
    )
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    encoder = warm_up(settings)
    results: dict = {"device": describe(encoder.device), "warm_up_s": time.perf_counter() - start}
    results["precision"] = str(encoder.autocast).removeprefix("torch.") if encoder.autocast else "fp32"
    pixels = encoder.preprocess(Image.open(film).convert("RGB"))[0][None]
    study = load_study(film)
    with torch.inference_mode():
        encoder.embed_images(pixels)
        results["forward_s"] = _median_s(lambda: encoder.embed_images(pixels), rounds)
    analyze(study, NOTES, settings=settings)
    results["analysis_s"] = _median_s(lambda: analyze(study, NOTES, settings=settings), rounds)
    if cuda or cpu_ig:
        results["ig50_s"] = _median_s(
            lambda: analyze(study, settings=settings, method="integrated_gradients", top_k=1), 1
        )
    else:  # minutes per map for the large towers on a CPU (docs/performance.md has BiomedCLIP's)
        results["ig50_s"] = None
    results["embed_films_per_s"] = {}
    for size in BATCH_SIZES:
        batch = pixels.expand(size, -1, -1, -1).contiguous()
        with torch.inference_mode():
            encoder.embed_images(batch)
            seconds = _median_s(lambda b=batch: encoder.embed_images(b), max(1, rounds // 2))
        results["embed_films_per_s"][str(size)] = size / seconds
    results["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def _child(
    spec: str, device: str, cache_dir: Path, film: Path, threads: int, rounds: int, cpu_ig: bool
) -> dict:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    code = (
        "import json, sys; from pathlib import Path; from meddx.dev.bench_device import measure_in_process; "
        "print(json.dumps(measure_in_process(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), "
        "threads=int(sys.argv[5]), rounds=int(sys.argv[6]), cpu_ig=sys.argv[7] == '1')))"
    )
    args = [spec, device, str(cache_dir), str(film), str(threads), str(rounds), "1" if cpu_ig else "0"]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=REPO_ROOT
    )
    if out.returncode:
        raise RuntimeError(f"bench on {device} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    device: str, *, threads: int = 2, rounds: int = 5, names: list[str] | None = None, quick: bool = False
):
    """Each architecture on ``device`` and then on the CPU (only the CPU when ``device`` is cpu), sharing one
    text-direction cache per model (the device computes the prompts' directions first, in seconds; the
    CPU run reads them). Integrated Gradients is timed on the CPU only for the tiny model (``quick``): a
    large tower's IG-50 map takes minutes there."""
    from meddx.dev.bench import _film
    from meddx.dev.tiny import make_tiny_model

    devices = ["cpu"] if device == "cpu" else [device, "cpu"]
    results: dict = {
        "threads": threads,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="meddx-bench-device-") as tmp:
        film = _film(Path(tmp) / "film.png")
        for name in ["tiny"] if quick else names or list(ARCHITECTURES):
            family, size = ("open_clip_hf", None) if name == "tiny" else ARCHITECTURES[name]
            options = {"family": family} | ({"size": size} if size else {})
            folder = make_tiny_model(Path(tmp) / name, **options)
            results[name] = {}
            cache = Path(tmp) / f"{name}-cache"
            for where in devices:
                spec = f"local-dir:{folder}"
                results[name][where] = _child(spec, where, cache, film, threads, rounds, cpu_ig=quick)
                print(f"{name} on {where}: {json.dumps(results[name][where])}", file=sys.stderr, flush=True)
    return results


def format_table(results: dict) -> str:
    """A Markdown table: one row per architecture and device."""
    lines = [
        "| model | device | precision | forward (s) | analysis, 3 maps, p50 (s) | IG-50 map (s) | "
        "embed films/s at 1 / 8 / 32 | GPU peak (MB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_device in results.items():
        if not isinstance(per_device, dict):
            continue
        for r in per_device.values():
            rates = " / ".join(f"{r['embed_films_per_s'][str(b)]:.1f}" for b in BATCH_SIZES)
            ig = "not timed" if r["ig50_s"] is None else f"{r['ig50_s']:.2f}"
            peak = "-" if r["gpu_peak_mb"] is None else f"{r['gpu_peak_mb']:.0f}"
            lines.append(
                f"| {name} | {r['device']} | {r['precision']} | {r['forward_s']:.3f} | "
                f"{r['analysis_s']:.3f} | {ig} | {rates} | {peak} | {r['peak_rss_mb']:.0f} |"
            )
    return (
        "\n".join(lines)
        + f"\n\n{results['date']}, {results['threads']} CPU threads, medians of {results['rounds']}."
    )
