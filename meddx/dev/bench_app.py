"""The app and CLI processes the benchmarks measure (`meddx.dev.bench`, `meddx.dev.bench_families`): a real
``app.py`` on a free port, time to its page and to its first `gradio_client` answer, its peak RSS, throughput
of concurrent clients, and ``python -m meddx analyze`` in a fresh process. Every process runs on the CPU
(``MEDDX_DEVICE=cpu``): these are the CPU Space's numbers (`meddx.dev.bench_device` compares devices).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from meddx.dev import REPO_ROOT

NOTES = (
    "58-year-old smoker with 3 weeks of productive cough and fever 38.4 C; no pneumothorax. "
    "History of right pleural effusion."
)


def _wait_for_stem(cache_dir: Path, timeout_s: float = 600) -> None:
    """Wait until a first start's background export has written the runtime stem into ``cache_dir``."""
    start = time.perf_counter()
    while not any((cache_dir / "stem").glob("*-fp32.onnx")):
        if time.perf_counter() - start > timeout_s:
            raise RuntimeError(f"app.py did not export the runtime stem within {timeout_s:.0f} s")
        time.sleep(0.5)


def measure_cli(model_spec: str, threads: int, cache_dir: Path, film: Path, repeat: int = 2) -> float:
    """Median wall seconds of ``python -m meddx analyze FILM`` in a fresh process (text cache on disk)."""
    env = dict(
        os.environ,
        MEDDX_MODEL=model_spec,
        MEDDX_THREADS=str(threads),
        MEDDX_CACHE_DIR=str(cache_dir),
        MEDDX_DEVICE="cpu",  # this bench is the CPU Space's (`meddx.dev.bench_device` compares devices)
        PYTHONPATH=str(REPO_ROOT),
    )
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "meddx", "analyze", str(film)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(model_spec: str, threads: int, cache_dir: Path) -> Iterator[tuple[float, str, int]]:
    """Start ``app.py`` in a fresh process; yield (seconds until its page answered, its URL, its pid)."""
    import urllib.request

    port = _free_port()
    env = dict(
        os.environ,
        MEDDX_MODEL=model_spec,
        MEDDX_THREADS=str(threads),
        MEDDX_CACHE_DIR=str(cache_dir),
        MEDDX_DEVICE="cpu",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    app = REPO_ROOT / "app.py"
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(app), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if time.perf_counter() - start > 300:
                raise RuntimeError("app.py did not serve within 300 s")
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with status {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield time.perf_counter() - start, url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure_ready(model_spec: str, threads: int, cache_dir: Path) -> float:
    """Seconds from starting ``app.py`` in a fresh process until its page answers."""
    with serve_app(model_spec, threads, cache_dir) as (seconds, _, _):
        return seconds


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (Linux ``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("this system does not report peak memory (no VmHWM in /proc)")


def _variants(film: Path, count: int) -> list[Path]:
    """Copies of a film that differ in one pixel: real clients send different films, and Gradio stores
    uploads by content, so identical files sent at once would share (and delete) one upload."""
    from PIL import Image

    pixels = np.asarray(Image.open(film).convert("L")).copy()
    paths = []
    for n in range(count):
        pixels[0, 0] = n % 256
        pixels[0, 1] = n // 256
        path = film.with_name(f"{film.stem}-{n}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def measure_concurrency(url: str, film: Path, *, clients: int = 8, per_client: int = 3) -> dict:
    """Requests per second through the server at ``url``: one client in sequence vs ``clients`` at once."""
    from gradio_client import Client, handle_file

    films = iter(_variants(film, 1 + per_client * 2 + clients * per_client))

    def work(batch: list[Path], errors: list) -> None:
        client = Client(url, verbose=False)
        for path in batch:
            try:
                client.predict(handle_file(str(path)), NOTES, api_name="/analyze")
            except Exception as exc:  # counted, reported, never raised inside a worker thread
                errors.append(type(exc).__name__)

    def take(n: int) -> list[Path]:
        return [next(films) for _ in range(n)]

    errors: list[str] = []
    work(take(1), errors)  # warm the server path
    start = time.perf_counter()
    work(take(per_client * 2), errors)
    single = per_client * 2 / (time.perf_counter() - start)
    threads = [threading.Thread(target=work, args=(take(per_client), errors)) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    many = clients * per_client / (time.perf_counter() - start)
    return {"single_rps": single, "concurrent_rps": many, "errors": len(errors), "ratio": many / single}


def first_result(url: str, film: Path) -> float:
    """Seconds for a new `gradio_client` client's first ``/analyze`` of ``film`` (it waits for the model)."""
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    Client(url, verbose=False).predict(handle_file(str(film)), NOTES, api_name="/analyze")
    return time.perf_counter() - start
