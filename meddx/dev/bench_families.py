"""Speed and memory of each model family's real architecture with random weights, in one run
(``python -m meddx bench --families``; ``MEDDX_STEM=torch`` measures without the runtime stem, whose
first export runs at the lowest priority and can take many minutes for a 400 M-parameter tower on a busy
machine).

For BiomedCLIP (open_clip + BiomedBERT, ViT-B/16 at 224), MedSigLIP-448 (transformers SigLIP-400M at 448)
and whyxrayclip (open_clip ViT-L/14 at 224 with its own text transformer), each built here with random
weights (no network), it measures:

- ``forward_s``: the family's own image-tower forward in PyTorch (`Encoder.visual`), batch 1;
- ``analysis_s``: the full ``analyze`` of one film (zero-shot scores with the runtime stem, Grad-CAM maps
  and regions for the default top 3, notes), after warm-up;

each forward and each analysis measured alternately, round by round, so that a load spike hits both; the
medians are reported and their ratio (target: analysis <= 1.5x the family's own forward). Then, against a
real ``app.py`` process: seconds until its page answers and until its first analysis is answered through
`gradio_client` (first start, which also exports the runtime stem in the background, and a restart with
the caches on disk), and the restarted app's peak RSS after a few analyses (target for MedSigLIP-448:
<= 6 GB). Each family's in-process numbers come from a child process, so one family's memory never
inflates the next one's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meddx.dev import REPO_ROOT

ARCHITECTURES = {  # name -> (family, make-tiny-model size)
    "biomedclip": ("open_clip_hf", "biomedclip"),
    "medsiglip-448": ("siglip", "medsiglip"),
    "whyxrayclip": ("open_clip", "whyxrayclip"),
}
TARGETS = {"analysis_over_forward": 1.5, "peak_rss_mb:medsiglip-448": 6000.0}


def measure_in_process(model_spec: str, cache_dir: Path, film: Path, *, threads: int, rounds: int) -> dict:
    """Forward and full analysis, alternately for ``rounds`` rounds after warm-up (this process)."""
    import torch
    from PIL import Image

    from meddx.config import Settings
    from meddx.io import load_study
    from meddx.model.encoder import load_encoder
    from meddx.pipeline import analyze, warm_up

    torch.set_num_threads(threads)
    stem = os.environ.get("MEDDX_STEM", "fp32")  # the app's setting, which serve_app passes on
    settings = Settings(model=model_spec, threads=threads, cache_dir=cache_dir, stem=stem, device="cpu")
    start = time.perf_counter()
    warm_up(settings)
    warm_s = time.perf_counter() - start
    encoder = load_encoder(model_spec, device="cpu")
    pixels = encoder.preprocess(Image.open(film).convert("RGB"))[0][None]
    study = load_study(film)
    notes = "58-year-old smoker, cough for 3 weeks; no pneumothorax."

    def forward() -> None:
        with torch.inference_mode():
            encoder.visual(pixels)

    def analysis() -> None:
        analyze(study, notes, settings=settings)

    forward()  # reads the released PyTorch stem back once (the runtime stem serves the analyses)
    analysis()
    forwards, analyses = [], []
    for _ in range(rounds):
        for fn, times in ((forward, forwards), (analysis, analyses)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    runtime = encoder.runtime_stem
    return {
        "stem_setting": settings.stem,
        "warm_up_s": warm_s,
        "forward_s": statistics.median(forwards),
        "analysis_s": statistics.median(analyses),
        "analysis_over_forward": statistics.median(analyses) / statistics.median(forwards),
        "rounds": rounds,
        "stem": getattr(runtime, "kind", None) or "torch",
    }


def _child(model_spec: str, cache_dir: Path, film: Path, threads: int, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MEDDX_CACHE_DIR=str(cache_dir))
    code = (
        "import json, sys; from pathlib import Path; "
        "from meddx.dev.bench_families import measure_in_process; "
        "print(json.dumps(measure_in_process(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), "
        "threads=int(sys.argv[4]), rounds=int(sys.argv[5]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, model_spec, str(cache_dir), str(film), str(threads), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_family(name: str, tmp: Path, film: Path, *, threads: int, rounds: int) -> dict:
    """Every number for one architecture (model built into ``tmp``)."""
    from meddx.dev.bench_app import _wait_for_stem, first_result, peak_rss_mb, serve_app
    from meddx.dev.tiny import make_tiny_model

    family, size = ARCHITECTURES[name]
    start = time.perf_counter()
    folder = make_tiny_model(tmp / name, size=size, family=family)
    results: dict = {"family": family, "build_model_s": time.perf_counter() - start}
    spec = f"local-dir:{folder}"
    cache = tmp / f"{name}-cache"
    with serve_app(spec, threads, cache) as (seconds, url, _):  # first start: no caches
        results["ready_s"] = seconds
        results["first_result_s"] = seconds + first_result(url, film)
        if os.environ.get("MEDDX_STEM", "fp32") != "torch":
            _wait_for_stem(cache, timeout_s=1800)  # exported in the background, at the lowest priority
    with serve_app(spec, threads, cache) as (seconds, url, pid):  # restart: caches on disk
        results["ready_warm_s"] = seconds
        results["first_result_warm_s"] = seconds + first_result(url, film)
        for _ in range(2):
            first_result(url, film)
        results["peak_rss_mb"] = peak_rss_mb(pid)
    results.update(_child(spec, cache, film, threads, rounds))
    return results


def run(*, threads: int = 2, rounds: int = 3, names: list[str] | None = None) -> dict:
    """Measure each architecture in turn; models and caches live in a temp folder removed afterwards."""
    from meddx.dev.bench import _film

    results = {
        "threads": threads,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="meddx-bench-families-") as tmp:
        film = _film(Path(tmp) / "film.png")
        for name in names or list(ARCHITECTURES):
            results[name] = measure_family(name, Path(tmp), film, threads=threads, rounds=rounds)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    return results


def format_table(results: dict) -> str:
    """A Markdown table, one column per architecture, with the targets' verdicts."""
    names = [n for n in ARCHITECTURES if n in results]
    rows = [
        ("image-tower forward, PyTorch (s)", "forward_s", "{:.2f}"),
        ("full analysis, 3 Grad-CAM maps, p50 (s)", "analysis_s", "{:.2f}"),
        ("analysis / forward (target <= 1.5)", "analysis_over_forward", "{:.2f}"),
        ("scoring stem in the analysis", "stem", "{}"),
        ("app ready, first start (s)", "ready_s", "{:.1f}"),
        ("first analysis answered, first start (s)", "first_result_s", "{:.1f}"),
        ("app ready, restart (s)", "ready_warm_s", "{:.1f}"),
        ("first analysis answered, restart (s)", "first_result_warm_s", "{:.1f}"),
        ("app peak RSS after 3 analyses (MB)", "peak_rss_mb", "{:.0f}"),
        ("build the random model (s)", "build_model_s", "{:.0f}"),
    ]
    lines = [
        f"{results['threads']} threads, medians of {results['rounds']} alternating rounds, {results['date']}",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key, form in rows:
        lines.append(f"| {label} | " + " | ".join(form.format(results[n][key]) for n in names) + " |")
    verdicts = [
        f"{n}: analysis/forward {results[n]['analysis_over_forward']:.2f} "
        f"{'met' if results[n]['analysis_over_forward'] <= TARGETS['analysis_over_forward'] else 'MISSED'}"
        for n in names
    ]
    if "medsiglip-448" in results:
        rss = results["medsiglip-448"]["peak_rss_mb"]
        verdicts.append(
            f"MedSigLIP-448 app peak RSS {rss:.0f} MB {'met' if rss <= 6000 else 'MISSED'} (<= 6 GB)"
        )
    return "\n".join([*lines, "", *verdicts])
