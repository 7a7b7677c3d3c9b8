"""Speed and memory of the whole chain, measured in one run (``python -m meddx bench``, see `meddx.cli`).

By default it builds BiomedCLIP's architecture with random weights in a temp folder (no network) and,
after warm-up, measures: process start to the app's page answering (``ready_s``; the model loads
meanwhile) and to its first analysis answered through `gradio_client` (``first_result_s``), one bare
image-tower forward (the floor), zero-shot scoring, text embeddings cold and cached, full ``analyze``
(maps and regions for the top 3, notes, report) p50/p95 and the maps-and-regions share of it, the naive
Captum Integrated Gradients baseline (50 steps, once), and, against a real ``app.py`` process, the
throughput of 8 concurrent ``gradio_client`` clients against one and that process's peak RSS. Ratios come
last, because this machine is noisy and only ratios from the same run mean much. ``--quick`` does all of
it on the tiny model in well under a minute; CI runs that so the harness never rots.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from meddx.dev.bench_app import (
    NOTES,
    _wait_for_stem,
    first_result,
    measure_cli,
    measure_concurrency,
    peak_rss_mb,
    serve_app,
)

TARGETS = {
    "analyze_over_forward": ("<=", 0.8),
    "analyze_int8_over_forward": ("<=", 0.5),
    "maps_over_forward": ("<=", 0.5),
    "ig_over_analyze": (">=", 50.0),
    "concurrent_throughput_ratio": (">=", 0.8),
    "ready_s": ("<=", 12.0),
    "ready_warm_s": ("<=", 8.0),
    "first_result_s": ("<=", 12.0),  # the same bounds, for the first analysis answered (the model ready)
    "first_result_warm_s": ("<=", 8.0),
    "cli_analyze_s": ("<=", 6.0),
    "peak_rss_mb": ("<=", 1600.0),
}
TIMED_TARGETS = (
    "ready_s",
    "first_result_s",
    "ready_warm_s",
    "first_result_warm_s",
    "cli_analyze_s",
    "peak_rss_mb",
)
STEMS = ("torch", "fp32", "int8")  # the scoring pass's stem variants, measured alternately


def _film(path: Path, size: int = 1024) -> Path:
    from PIL import Image

    from meddx.dev.tiny import synthetic_film

    Image.fromarray(synthetic_film(np.random.default_rng(7), size=size, blob=True).pixels).save(path)
    return path


def _large_dicom(path: Path, side: int = 3000) -> Path:
    """A 16-bit MONOCHROME2 film of ``side`` x ``side`` pixels, uncompressed, no identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(side), np.arange(side)) * 5
    pixels = (ramp + rng.integers(0, 200, (side, side))).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(model_spec: str | None, *, quick: bool, threads: int, repeats: int) -> dict:
    """Run every measurement and return the numbers (seconds, MB, ratios). Its model, caches and films
    live in a temporary folder that is removed afterwards (a BiomedCLIP-size run leaves 1.2 GB)."""
    with tempfile.TemporaryDirectory(prefix="meddx-bench-") as tmp:
        return _measure(Path(tmp), model_spec, quick=quick, threads=threads, repeats=repeats)


def _measure(tmp: Path, model_spec: str | None, *, quick: bool, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    results: dict = {"threads": threads, "quick": quick}
    if model_spec is None:
        from meddx.dev.tiny import make_tiny_model

        start = time.perf_counter()
        folder = make_tiny_model(tmp / "model", size="tiny" if quick else "biomedclip")
        results["build_model_s"] = time.perf_counter() - start
        model_spec = f"local-dir:{folder}"
    results["model"] = model_spec
    film = _film(tmp / "film.png")
    with serve_app(model_spec, threads, tmp / "cache") as (seconds, url, _):  # first start: no caches
        results["ready_s"] = seconds  # the page answers (the model may still be loading)
        results["first_result_s"] = seconds + first_result(url, film)
        _wait_for_stem(tmp / "cache")  # exported in the background while the app serves
    with serve_app(model_spec, threads, tmp / "cache") as (seconds, url, pid):  # restart: caches on disk
        results["ready_warm_s"] = seconds
        results["first_result_warm_s"] = seconds + first_result(url, film)
        concurrency = measure_concurrency(url, film, per_client=2 if quick else 3)
        # The app's own high-water mark (model, server, 1 + 2k + 8k analyses), not this process's.
        results["peak_rss_mb"] = peak_rss_mb(pid)
    results["concurrent_single_rps"] = concurrency["single_rps"]
    results["concurrent_rps"] = concurrency["concurrent_rps"]
    results["concurrent_errors"] = concurrency["errors"]
    results["concurrent_throughput_ratio"] = concurrency["ratio"]
    results["cli_analyze_s"] = measure_cli(model_spec, threads, tmp / "cache", film)

    from meddx.config import Settings
    from meddx.io import load_study
    from meddx.model.encoder import load_encoder
    from meddx.model.scored import score_image
    from meddx.model.stem import RuntimeStem, agreement, load_runtime_stem, restore_torch_stem, stem_path
    from meddx.model.tower import stem
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.zero_shot import text_directions
    from meddx.pipeline import analyze, warm_up
    from meddx.report.render import render_html

    settings = Settings(model=model_spec, threads=threads, cache_dir=tmp / "cache", device="cpu")
    start = time.perf_counter()
    warm_up(settings)
    results["load_warm_s"] = time.perf_counter() - start
    encoder = load_encoder(model_spec, device="cpu")
    findings = list(load_vocabulary().findings)
    study = load_study(film)
    large = _large_dicom(tmp / "large.dcm")
    results["dicom_3000_load_s"] = statistics.median(_timed(lambda: load_study(large), 3))

    cold = tmp / "cold-cache"
    encoder.embed_texts(["warm-up released the text tower: read it back first"])
    encoder.direction_cache.clear()
    results["text_cold_s"] = _timed(lambda: text_directions(encoder, findings, cache_dir=cold), 1)[0]
    results["text_cached_s"] = statistics.median(
        _timed(lambda: text_directions(encoder, findings, cache_dir=cold), 5)
    )
    directions = text_directions(encoder, findings)

    # The stem variants, side by side in this process (the PyTorch stem's weights back in memory).
    restore_torch_stem(encoder)
    runtimes = {"torch": None, "fp32": load_runtime_stem(encoder, "fp32", settings.cache_dir, release=False)}
    load_runtime_stem(  # makes the int8 file (the gate's verdict is taken below)
        encoder, "int8", settings.cache_dir, directions=directions, threads=threads, release=False
    )
    int8 = RuntimeStem(stem_path(encoder, settings.cache_dir, "int8"), "int8", threads)
    refused = agreement(encoder, int8, directions)
    results["int8_gate"] = refused or "passed"
    stems = dict(runtimes, int8=int8)  # the int8 stem's own speed is measured either way
    if not refused:
        runtimes["int8"] = int8

    pixels = torch.rand(1, 3, encoder.image_size, encoder.image_size)
    image = study.to_pil("RGB")
    stem_times: dict[str, list[float]] = {name: [] for name in stems}
    forward_times: list[float] = []
    with torch.inference_mode():
        _timed(lambda: encoder.embed_images(pixels), 2)
        for runtime in stems.values():
            _timed(lambda r=runtime: r(pixels) if r is not None else stem(encoder, pixels), 2)
        for _ in range(repeats):  # alternating, so that the machine's drift hits every variant alike
            forward_times += _timed(lambda: encoder.embed_images(pixels), 1)
            for name, runtime in stems.items():
                stem_times[name] += _timed(
                    lambda r=runtime: r(pixels) if r is not None else stem(encoder, pixels), 1
                )
    results["forward_s"] = statistics.median(forward_times)
    for name, times in stem_times.items():
        results[f"stem_{name}_s"] = statistics.median(times)

    maps_times: dict[str, list[float]] = {name: [] for name in runtimes}
    analyze_times: dict[str, list[float]] = {name: [] for name in runtimes}
    zero_shot_times: list[float] = []

    def full(name: str) -> None:
        encoder.runtime_stem = runtimes[name]
        start = time.perf_counter()
        analysis = analyze(film, NOTES, settings=settings)
        render_html(analysis)
        analyze_times[name].append(time.perf_counter() - start)
        maps_times[name].append(analysis.timings.explain_s)

    for name in runtimes:  # warm each variant once, then alternate
        full(name)
    for times in (*maps_times.values(), *analyze_times.values()):
        del times[:]
    for _ in range(max(repeats, 10)):
        for name in runtimes:
            full(name)
        encoder.runtime_stem = runtimes["fp32"]
        zero_shot_times += _timed(lambda: score_image(encoder, image, directions), 1)
    encoder.runtime_stem = runtimes["fp32"]  # what the app serves with by default
    results["zero_shot_s"] = statistics.median(zero_shot_times)
    results["maps_top3_s"] = statistics.median(maps_times["fp32"])
    results["analyze_p50_s"] = float(np.percentile(analyze_times["fp32"], 50))
    results["analyze_p95_s"] = float(np.percentile(analyze_times["fp32"], 95))
    results["analyze_torch_p50_s"] = float(np.percentile(analyze_times["torch"], 50))
    results["analyze_int8_p50_s"] = (
        float(np.percentile(analyze_times["int8"], 50)) if "int8" in analyze_times else None
    )

    from meddx.explain.maps import film_maps

    scored = score_image(encoder, image, directions)
    target = int(scored.zero_shot.argmax())
    results["ig50_s"] = _timed(
        lambda: film_maps(encoder, scored, [target], method="integrated_gradients", n_steps=50), 1
    )[0]

    results["ig_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    forward = results["forward_s"]
    results["analyze_over_forward"] = results["analyze_p50_s"] / forward
    results["analyze_torch_over_forward"] = results["analyze_torch_p50_s"] / forward
    results["analyze_int8_over_forward"] = (
        results["analyze_int8_p50_s"] / forward if results["analyze_int8_p50_s"] is not None else None
    )
    results["maps_over_forward"] = results["maps_top3_s"] / forward
    results["ig_over_analyze"] = results["ig50_s"] / results["analyze_p50_s"]
    results["load_average"] = os.getloadavg()
    return results


def verdicts(results: dict) -> dict[str, bool | None]:
    """Which targets this run met (None: not measured, e.g. the int8 stem refused by its gate)."""
    out: dict[str, bool | None] = {}
    for key, (op, bound) in TARGETS.items():
        value = results.get(key)
        out[key] = None if value is None else value <= bound if op == "<=" else value >= bound
    return out


def _verdict(value: bool | None) -> str:
    return "not measured" if value is None else "met" if value else "MISSED"


def format_table(results: dict) -> str:
    """A plain-text table; ratios and target verdicts last."""

    def seconds(key: str, digits: int = 3) -> str:
        value = results.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        ("model", results["model"]),
        ("threads", results["threads"]),
        ("page answers, first start (s)", seconds("ready_s", 2)),
        ("first analysis answered, first start (s)", seconds("first_result_s", 2)),
        ("page answers, restart with caches (s)", seconds("ready_warm_s", 2)),
        ("first analysis answered, restart (s)", seconds("first_result_warm_s", 2)),
        ("python -m meddx analyze one film, wall (s)", seconds("cli_analyze_s", 2)),
        ("load + warm-up, in process (s)", seconds("load_warm_s", 2)),
        ("text embeddings, cold (s)", seconds("text_cold_s")),
        ("text embeddings, cached (s)", seconds("text_cached_s", 5)),
        ("reading a 3000 x 3000 16-bit DICOM (s)", seconds("dicom_3000_load_s")),
        ("image-tower forward, batch 1, PyTorch (s)", seconds("forward_s")),
        ("stem: PyTorch / ONNX fp32 / ONNX int8 (s)", " / ".join(seconds(f"stem_{n}_s") for n in STEMS)),
        ("int8 agreement gate", results.get("int8_gate", "-")),
        ("zero-shot scoring, all findings (s)", seconds("zero_shot_s")),
        ("Grad-CAM maps + regions, top 3 (s)", seconds("maps_top3_s")),
        ("analyze p50, ONNX fp32 stem (s)", seconds("analyze_p50_s")),
        ("analyze p95, ONNX fp32 stem (s)", seconds("analyze_p95_s")),
        ("analyze p50, PyTorch stem (s)", seconds("analyze_torch_p50_s")),
        ("analyze p50, ONNX int8 stem (s)", seconds("analyze_int8_p50_s")),
        ("Integrated Gradients, 50 steps (s)", seconds("ig50_s", 2)),
        ("peak RSS of app.py after 1 + 8 clients (MB)", seconds("peak_rss_mb", 0)),
        ("peak RSS of this process after IG50 (MB)", seconds("ig_peak_rss_mb", 0)),
        ("1 client (req/s)", seconds("concurrent_single_rps", 2)),
        ("8 clients (req/s)", f"{seconds('concurrent_rps', 2)} ({results.get('concurrent_errors')} errors)"),
    ]
    verdict = verdicts(results)
    ratios = [
        ("analyze p50 (fp32 stem) / forward", "analyze_over_forward"),
        ("analyze p50 (int8 stem) / forward", "analyze_int8_over_forward"),
        ("analyze p50 (PyTorch stem) / forward", "analyze_torch_over_forward"),
        ("maps + regions, top 3 / forward", "maps_over_forward"),
        ("IG50 / analyze p50", "ig_over_analyze"),
        ("8-client / 1-client throughput", "concurrent_throughput_ratio"),
    ]
    width = max(len(r[0]) for r in rows + ratios) + 2
    lines = [f"{name:<{width}}{value}" for name, value in rows]
    lines.append("-" * (width + 20))
    for name, key in ratios:
        value = results.get(key)
        shown = "-" if value is None else f"{value:.2f}"
        if key in TARGETS:
            op, bound = TARGETS[key]
            lines.append(f"{name:<{width}}{shown}   target {op} {bound}  {_verdict(verdict[key])}")
        else:
            lines.append(f"{name:<{width}}{shown}   (reference)")
    for key in TIMED_TARGETS:
        op, bound = TARGETS[key]
        value = results.get(key)
        shown = "-" if value is None else f"{value:.1f}"
        lines.append(f"{key:<{width}}{shown}   target {op} {bound}  {_verdict(verdict[key])}")
    return "\n".join(lines)
