"""The benchmark harness runs end to end (``--quick``, tiny model) so that it never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meddx.dev.bench import TARGETS, format_table, verdicts

ROOT = Path(__file__).resolve().parents[1]
KEYS = [
    "dicom_3000_load_s",
    "forward_s",
    "zero_shot_s",
    "analyze_p50_s",
    "analyze_p95_s",
    "maps_top3_s",
    "ig50_s",
    "ready_s",
    "ready_warm_s",
    "first_result_s",
    "first_result_warm_s",
    "cli_analyze_s",
    "peak_rss_mb",
    "concurrent_throughput_ratio",
    "stem_torch_s",
    "stem_fp32_s",
    "analyze_torch_p50_s",
    "int8_gate",
]


@pytest.mark.slow
def test_bench_quick_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(scratch))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meddx",
            "bench",
            "--quick",
            "--threads",
            "1",
            "--repeats",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [p.name for p in scratch.glob("meddx-bench-*")]  # its model and caches are removed
    numbers = json.loads(out.read_text())
    assert set(KEYS) <= set(numbers)
    assert numbers["concurrent_errors"] == 0
    # What the numbers must satisfy whatever the machine: parts never exceed their whole, the text cache
    # is faster than the text tower, and the ratios are the quotients the table claims.
    assert 0 < numbers["maps_top3_s"] <= numbers["analyze_p50_s"] <= numbers["analyze_p95_s"]
    assert 0 < numbers["zero_shot_s"] < numbers["analyze_p50_s"]
    assert numbers["text_cached_s"] < numbers["text_cold_s"]
    assert numbers["analyze_over_forward"] == pytest.approx(numbers["analyze_p50_s"] / numbers["forward_s"])
    assert numbers["analyze_torch_over_forward"] == pytest.approx(
        numbers["analyze_torch_p50_s"] / numbers["forward_s"]
    )
    if numbers["int8_gate"] == "passed":  # the tiny model's int8 stem passes its gate (tests/test_stem.py)
        assert numbers["analyze_int8_over_forward"] == pytest.approx(
            numbers["analyze_int8_p50_s"] / numbers["forward_s"]
        )
    else:
        assert numbers["analyze_int8_over_forward"] is None
    assert numbers["maps_over_forward"] == pytest.approx(numbers["maps_top3_s"] / numbers["forward_s"])
    assert numbers["ig_over_analyze"] == pytest.approx(numbers["ig50_s"] / numbers["analyze_p50_s"])
    assert numbers["concurrent_throughput_ratio"] == pytest.approx(
        numbers["concurrent_rps"] / numbers["concurrent_single_rps"]
    )
    assert format_table(numbers) in result.stdout


def test_table_and_verdicts_from_numbers():
    numbers = {
        "model": "local-dir:/m",
        "threads": 2,
        "ready_s": 9.0,
        "ready_warm_s": 5.0,
        "first_result_s": 10.0,
        "first_result_warm_s": 6.0,
        "cli_analyze_s": 5.0,
        "load_warm_s": 3.0,
        "text_cold_s": 1.0,
        "text_cached_s": 0.0001,
        "dicom_3000_load_s": 0.05,
        "forward_s": 0.35,
        "zero_shot_s": 0.36,
        "analyze_p50_s": 0.25,
        "analyze_p95_s": 0.7,
        "maps_top3_s": 0.1,
        "ig50_s": 40.0,
        "peak_rss_mb": 1500.0,
        "stem_torch_s": 0.33,
        "stem_fp32_s": 0.2,
        "stem_int8_s": 0.08,
        "int8_gate": "passed",
        "analyze_torch_p50_s": 0.5,
        "analyze_int8_p50_s": 0.15,
        "analyze_torch_over_forward": 0.5 / 0.35,
        "analyze_int8_over_forward": 0.15 / 0.35,
        "ig_peak_rss_mb": 2500.0,
        "concurrent_single_rps": 1.5,
        "concurrent_rps": 1.4,
        "concurrent_errors": 0,
        "concurrent_throughput_ratio": 0.93,
        "analyze_over_forward": 0.25 / 0.35,
        "maps_over_forward": 0.1 / 0.35,
        "ig_over_analyze": 40.0 / 0.25,
    }
    assert all(verdicts(numbers).values())
    assert set(verdicts(numbers)) == set(TARGETS)
    worse = dict(numbers, analyze_over_forward=2.5, ready_s=20.0)
    assert not verdicts(worse)["analyze_over_forward"] and not verdicts(worse)["ready_s"]
    table = format_table(worse)
    assert table.count("MISSED") == 2 and table.splitlines()[-1].startswith("peak_rss_mb")
    refused = dict(numbers, int8_gate="top 3 differs on gate film 2 of 6", analyze_int8_p50_s=None)
    refused["analyze_int8_over_forward"] = None
    assert verdicts(refused)["analyze_int8_over_forward"] is None
    assert "not measured" in format_table(refused) and "top 3 differs" in format_table(refused)


@pytest.mark.slow
def test_bench_device_quick_measures_every_column_on_the_cpu(tmp_path):
    """``bench --device`` runs end to end here on the CPU column alone (the GPU column needs a GPU)."""
    out = tmp_path / "device.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["bench", "--device", "cpu", "--quick", "--threads", "1", "--repeats", "2", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "meddx", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(out.read_text())["tiny"]["cpu"]
    assert row["device"] == "CPU" and row["precision"] == "fp32" and row["gpu_peak_mb"] is None
    for key in ("forward_s", "analysis_s", "ig50_s", "peak_rss_mb"):
        assert row[key] > 0, key
    assert set(row["embed_films_per_s"]) == {"1", "8", "32"}
    assert "| tiny | CPU | fp32 |" in result.stdout
