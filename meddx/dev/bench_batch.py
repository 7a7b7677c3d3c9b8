"""``python -m meddx bench-batch``: films/s of ``analyze FOLDER`` against ``batch`` with 1 and 2 workers.

In one run, on one folder of generated films (1024 px PNGs, as `meddx.bench` uses) and the same model
and maps: ``python -m meddx analyze FOLDER`` and ``python -m meddx batch FOLDER`` with each worker count,
each a fresh process timed from start to exit (imports, model loading and Ray's start-up included), with
the peak RSS of the driver and of every scoring actor (Linux ``VmHWM``, polled over the process tree).
The text-direction cache is filled once beforehand so that no run pays for it. By default the model is
BiomedCLIP's architecture with random weights (``make-tiny-model --size biomedclip``, no network).
This is a measurement, not a test: on a shared machine the numbers move by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GOAL = 1.3  # batch with 2 workers over analyze FOLDER, start-up included for both


def _films(folder: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    from meddx.dev.tiny import synthetic_film

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        film = synthetic_film(rng, size=size, blob=bool(i % 2))
        Image.fromarray(film.pixels).save(folder / f"film{i:05d}.png")


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _TreeMemory(threading.Thread):
    """Polls the peak RSS of a process and all its descendants, naming each by its command line."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peaks: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                root = psutil.Process(self.pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                peak = _hwm_mb(process.pid)
                if peak is None:
                    continue
                try:
                    name = " ".join(process.cmdline())[:80] or process.name()
                except psutil.Error:
                    name = "?"
                old = self.peaks.get(process.pid, (name, 0.0))
                self.peaks[process.pid] = (name if "ray::" in name else old[0], max(old[1], peak))
            self.done.wait(self.every_s)


def _timed(command: list[str], env: dict) -> tuple[float, int, dict[int, tuple[str, float]], str]:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = _TreeMemory(process.pid)
    memory.start()
    _, err = process.communicate()
    seconds = time.perf_counter() - start
    memory.done.set()
    memory.join()
    return seconds, process.returncode, memory.peaks, err


def run(
    *, films: int, size: int, maps: int, workers: list[int], model: str | None, batch_size: int, root: Path
) -> dict:
    """Build (or use) the model, write the films, run every variant; return the numbers."""
    from meddx.dev.tiny import make_tiny_model

    results: dict = {"films": films, "film_side_px": size, "maps": maps, "cpus": os.cpu_count()}
    if model is None:
        tick = time.perf_counter()
        model = f"local-dir:{make_tiny_model(root / 'model', size='biomedclip', seed=0)}"
        results["model_build_s"] = round(time.perf_counter() - tick, 1)
        results["model"] = "BiomedCLIP architecture, random weights"
    else:
        results["model"] = model
    folder = root / "films"
    _films(folder, films, size)
    env = dict(
        os.environ,
        MEDDX_MODEL=model,
        MEDDX_CACHE_DIR=str(root / "cache"),
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.pop("MEDDX_THREADS", None)
    python = [sys.executable, "-m", "meddx"]
    # Fill the text-direction cache once, so that no measured run pays for the prompt embeddings.
    subprocess.run(
        [*python, "analyze", str(folder / "film00000.png")], env=env, capture_output=True, check=True
    )

    seconds, code, peaks, err = _timed([*python, "analyze", str(folder), "--top-k", str(maps)], env)
    if code != 0:
        raise RuntimeError(f"analyze FOLDER failed: {err.strip()[-500:]}")
    results["analyze"] = {
        "wall_s": round(seconds, 1),
        "films_per_s": round(films / seconds, 3),
        "peak_rss_mb": round(max(p for _, p in peaks.values())),
    }
    for count in workers:
        out = root / f"out-{count}"
        command = [*python, "batch", str(folder), "--out", str(out), "--maps", str(maps) if maps else "none"]
        command += ["--workers", str(count), "--batch-size", str(batch_size)]
        seconds, code, peaks, err = _timed(command, env)
        if code != 0:
            raise RuntimeError(f"batch --workers {count} failed: {err.strip()[-500:]}")
        summary = json.loads((out / "summary.json").read_text())
        actors = [p for name, p in peaks.values() if "Score" in name]
        results[f"batch_{count}"] = {
            "wall_s": round(seconds, 1),
            "films_per_s": round(films / seconds, 3),
            "ray_init_s": summary.get("ray_start_s"),
            "first_result_s": summary.get("first_result_s"),
            "threads_per_worker": summary.get("threads_per_worker"),
            "errors": summary["errors"],
            "driver_peak_rss_mb": round(max((p for n, p in peaks.values() if "meddx" in n), default=0)),
            "worker_peak_rss_mb": [round(p) for p in sorted(actors)],
            "tree_peak_rss_mb_sum": round(sum(p for _, p in peaks.values())),
        }
    if 2 in workers:
        results["ratio_2_workers_over_analyze"] = round(
            results["batch_2"]["films_per_s"] / results["analyze"]["films_per_s"], 2
        )
    return results


def format_table(results: dict) -> str:
    lines = [
        f"{results['films']} films of {results['film_side_px']} px, maps for the top {results['maps']}, "
        f"{results['cpus']} CPUs, model: {results['model']}",
        f"{'run':<22}{'wall s':>8}{'films/s':>9}  details",
    ]
    a = results["analyze"]
    lines.append(
        f"{'analyze FOLDER':<22}{a['wall_s']:>8}{a['films_per_s']:>9}  peak RSS {a['peak_rss_mb']} MB"
    )
    for key, value in results.items():
        if key.startswith("batch_"):
            detail = (
                f"ray.init {value['ray_init_s']} s, first result at {value['first_result_s']} s, "
                f"{value['threads_per_worker']} threads/worker, "
                f"worker peak RSS {value['worker_peak_rss_mb']} MB, "
                f"driver {value['driver_peak_rss_mb']} MB"
            )
            name = f"batch --workers {key.split('_')[1]}"
            lines.append(f"{name:<22}{value['wall_s']:>8}{value['films_per_s']:>9}  {detail}")
    if "ratio_2_workers_over_analyze" in results:
        ratio = results["ratio_2_workers_over_analyze"]
        verdict = "met" if ratio >= GOAL else "NOT met"
        lines.append(f"batch (2 workers) / analyze FOLDER: {ratio} (goal >= {GOAL}: {verdict})")
    return "\n".join(lines)


def run_bench_batch(argv: list[str]) -> int:
    """Entry point of ``python -m meddx bench-batch``."""
    p = argparse.ArgumentParser(prog="python -m meddx bench-batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--films", type=int, default=200)
    p.add_argument("--size", type=int, default=1024, help="film side in pixels")
    p.add_argument("--maps", type=int, default=3, help="maps for the top K findings in every run (0: none)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts for batch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model", help="model spec (default: BiomedCLIP's architecture, random weights)")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    from meddx.batch.engine import import_ray

    import_ray()
    with tempfile.TemporaryDirectory(prefix="meddx-bench-batch-") as tmp:
        results = run(
            films=args.films,
            size=args.size,
            maps=args.maps,
            workers=[int(w) for w in args.workers.split(",") if w.strip()],
            model=args.model,
            batch_size=args.batch_size,
            root=Path(tmp),
        )
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
