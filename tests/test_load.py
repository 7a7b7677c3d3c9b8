"""Load and soak: the live app (in-process, tiny model) under sequential and concurrent clients, and the
request time budget.

After a warm-up, 200 sequential requests and then 8 concurrent clients x 25 requests must all succeed,
and the resident memory of this process (which runs the server) may grow by less than 10 %. Every request
sends a film of its own (one pixel differs), as different patients would. Latencies (p50/p95) and the
memory growth are printed (``pytest -s`` shows them). On a shared 2-core machine the tiny model answers a
request in about 0.1-0.2 s, so the file takes about two minutes.

Gradio stores uploads by content, so clients that send the *same* file at the same time share one upload;
`test_identical_uploads_sent_at_once_never_break_the_app` shows what they get.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from PIL import Image

from meddx.config import Limits, Settings
from meddx.errors import BudgetExceeded
from meddx.pipeline import analyze
from tests.corpus import dicom_bytes, dicom_dataset, encode, film
from tests.helpers import api_client, files_under, running_app

pytestmark = pytest.mark.slow

WARM_UP = 20
"""Requests before memory is measured: 4 sequential, then 2 from each concurrent client."""
SEQUENTIAL = 200
CLIENTS, PER_CLIENT = 8, 25
MAX_RSS_GROWTH = 0.10
NOTES = [
    "",
    "Productive cough and fever for 3 days. No pneumothorax.",
    "Ex-smoker, 40 pack-years; weight loss.",
]
BUDGET_S = 1e-6
"""A request budget spent before scoring starts (reading the film alone takes longer), so the request stops
with its message whatever the machine's speed. A budget spent during the maps keeps the maps drawn (above)."""


def write_film(folder: Path, index: int) -> Path:
    """Request ``index``'s own film: PNG for even, DICOM for odd indices, one pixel set from the index."""
    pixels = film()
    pixels[0, 0], pixels[0, 1] = index % 256, index // 256 % 256
    if index % 2:
        path, data = folder / f"film-{index}.dcm", dicom_bytes(dicom_dataset(pixels))
    else:
        path, data = folder / f"film-{index}.png", encode(Image.fromarray(pixels), "PNG")
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[Path]:
    """A PNG and a DICOM film."""
    folder = tmp_path_factory.mktemp("films")
    return [write_film(folder, 0), write_film(folder, 1)]


def request(client, path: Path, index: int) -> float:
    """One ``/analyze`` call (notes or none, one Grad-CAM map); returns its latency in seconds."""
    from gradio_client import handle_file

    start = time.perf_counter()
    data, markdown = client.predict(handle_file(path), NOTES[index % 3], maps=1, api_name="/analyze")
    elapsed = time.perf_counter() - start
    assert data["findings"] and data["disclaimer"] in markdown
    return elapsed


def percentiles(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=20)
    return f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {cuts[18] * 1000:.0f} ms"


def resident_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_sequential_then_concurrent_requests_all_succeed_without_memory_growth(app_url, gradio_tmp, tmp_path):
    client = api_client(app_url)
    clients = [api_client(app_url) for _ in range(CLIENTS)]
    numbers = iter(range(10**6))  # every request gets a film of its own

    def run(own, latencies: list[float], errors: list[str], count: int) -> None:
        for _ in range(count):
            index = next(numbers)
            try:
                latencies.append(request(own, write_film(tmp_path, index), index))
            except Exception as exc:  # counted, not raised: every failure is reported at the end
                errors.append(f"request {index}: {type(exc).__name__}: {exc}")

    def in_parallel(count: int) -> tuple[list[float], list[str], float]:
        """Every client sends ``count`` requests, all clients at once; returns latencies, errors, seconds."""
        latencies: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda own: run(own, latencies, errors, count), clients))
        return latencies, errors, time.perf_counter() - start

    warm_up: list[float] = []
    warm_up_errors: list[str] = []
    run(client, warm_up, warm_up_errors, WARM_UP - 2 * CLIENTS)  # the first concurrent requests start pools
    parallel, parallel_errors, _ = in_parallel(2)
    assert warm_up_errors + parallel_errors == []
    assert len(warm_up + parallel) == WARM_UP
    baseline = resident_bytes()

    sequential: list[float] = []
    sequential_errors: list[str] = []
    run(client, sequential, sequential_errors, SEQUENTIAL)
    after_sequential = resident_bytes()
    concurrent, errors, wall = in_parallel(PER_CLIENT)
    final = resident_bytes()

    growth = final / baseline - 1
    print(
        f"\nsequential: {SEQUENTIAL} requests, {len(sequential_errors)} errors, {percentiles(sequential)}"
        f"\nconcurrent: {CLIENTS} clients x {PER_CLIENT} = {len(concurrent) + len(errors)} requests, "
        f"{len(errors)} errors, {percentiles(concurrent)}, {len(concurrent) / wall:.1f} requests/s"
        f"\nresident memory: {baseline / 2**20:.0f} MiB after warm-up, {after_sequential / 2**20:.0f} MiB "
        f"after the sequential run, {final / 2**20:.0f} MiB at the end ({growth:+.1%})"
    )
    assert sequential_errors == [] and errors == []
    assert len(sequential) == SEQUENTIAL and len(concurrent) == CLIENTS * PER_CLIENT
    assert growth < MAX_RSS_GROWTH
    assert files_under(gradio_tmp) == []


def test_identical_uploads_sent_at_once_never_break_the_app(app_url, films, gradio_tmp):
    """Four clients send the same film six times each: one shared upload, used and deleted in turn.

    Requests that run at the same time share it, and the last one deletes it; a request that waited in the
    queue while an identical one was analysed and deleted gets the clear "upload it again" message. None
    gets an internal error, and nothing is left behind.
    """
    from gradio_client.exceptions import AppError

    def one_client(number: int) -> list[str]:
        own, outcomes = api_client(app_url), []
        for index in range(6):
            try:
                request(own, films[number % 2], index)
                outcomes.append("ok")
            except AppError as exc:
                outcomes.append(str(exc))
        return outcomes

    with ThreadPoolExecutor(4) as pool:
        outcomes = [outcome for found in pool.map(one_client, range(4)) for outcome in found]
    retry = "The uploaded file is no longer on the server: uploads are deleted after each analysis."
    print(
        f"\nidentical uploads: {outcomes.count('ok')} of {len(outcomes)} analysed, the others asked to upload"
    )
    assert all(outcome == "ok" or outcome.startswith(retry) for outcome in outcomes), set(outcomes)
    assert outcomes.count("ok") >= len(outcomes) // 4  # most share the upload; 22 of 24 here
    assert files_under(gradio_tmp) == []


# --- the request time budget -------------------------------------------------------------------------


def test_analyze_stops_between_steps_once_the_budget_is_spent(tiny_settings, films, monkeypatch):
    from meddx import pipeline
    from meddx.explain.cost import COSTS

    with pytest.raises(BudgetExceeded, match=r"took longer than 0 s and was stopped before scoring"):
        analyze(films[0], settings=tiny_settings, time_budget_s=0)

    clock = [0.0]  # the pipeline's clock moves only while a map is drawn: one second per map
    real_film_maps = pipeline.film_maps
    COSTS.clear()  # the costs measured here: one second per map, from the first map drawn

    def one_second_per_map(*args, **kwargs):
        clock[0] += 1.0
        return real_film_maps(*args, **kwargs)

    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(pipeline, "film_maps", one_second_per_map)
    slow = "gradient_shap"  # slow methods draw one map at a time, with a budget check before each
    steps: list[tuple[int, int, str]] = []
    kept = analyze(
        films[0],
        settings=tiny_settings,
        top_k=5,
        method=slow,
        time_budget_s=2.5,
        on_progress=lambda *step: steps.append(step),
    )
    # A map that would end past the budget is not started: after 2 maps (2 s), a third would end at 3 s.
    assert len(kept.explanation.mapped) == 2 == len(kept.maps), "the finished maps are kept"
    skipped = [f.label for f in kept.findings if f.id not in kept.explanation.mapped and f.id != "no_finding"]
    assert kept.warnings[-1].startswith("The time budget (2.5 s) ran out after 2 of 5 maps; not drawn: ")
    drawn_not = kept.warnings[-1].split("not drawn: ")[1].split(". Try")[0].split(", ")
    assert len(drawn_not) == 3 and set(drawn_not) <= set(skipped)
    assert [s[:2] for s in steps] == [(0, 6), (1, 6), (2, 6), (6, 6)]
    assert steps[1][2].startswith("Gradient SHAP map 1 of 5: ")
    clock[0] = 0.0
    analysis = analyze(films[0], settings=tiny_settings, top_k=5, method=slow, time_budget_s=5)
    assert len(analysis.explanation.mapped) == 5
    clock[0] = 0.0  # Grad-CAM, the fast default, draws all maps in one pass
    assert len(analyze(films[0], settings=tiny_settings, top_k=5, time_budget_s=1.5).explanation.mapped) == 5
    assert clock[0] == 1.0
    COSTS.clear()


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEDDX_REQUEST_TIMEOUT_S", "7")
    assert Settings.from_env().limits.request_timeout_s == 7
    assert Limits().request_timeout_s == 120


def test_a_request_over_its_budget_gets_the_clear_message_and_the_app_keeps_serving(
    tiny_settings, films, tmp_path
):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    tight = dataclasses.replace(tiny_settings, limits=Limits(request_timeout_s=BUDGET_S))
    with running_app(tight, tmp_path / "gradio") as url:
        client = api_client(url)
        with pytest.raises(AppError) as raised:
            client.predict(
                handle_file(films[0]),
                "",
                attribution_method="integrated_gradients",
                maps=5,
                api_name="/analyze",
            )
        message = str(raised.value)
        assert message.startswith(f"The analysis took longer than {BUDGET_S:g} s and was stopped before ")
        assert message.endswith("; try the Grad-CAM method or fewer maps.")
        assert files_under(tmp_path / "gradio") == [], "the upload was left behind"
        with pytest.raises(AppError, match="took longer than"):  # the next request is answered the same way
            client.predict(handle_file(films[0]), "", maps=0, api_name="/analyze")
        assert client.predict("no pneumothorax", api_name="/notes")  # and the app keeps serving
