"""``eval`` with several models, through the real CLI: two tiny models on the same films, one trained on the
planted signal and one random; the paired comparison, pairing heads and calibrations with their models, and
"too few" instead of intervals that look exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddx.cli.main import main
from meddx.train.paired import paired_auroc, resample_indices
from meddx.train.sample_size import MIN_PER_CLASS_FOR_INTERVALS, too_few
from tests.helpers import write_film_folder


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare-films")
    return {
        "enough": write_film_folder(root / "enough", positives=20, negatives=20, seed=21),
        "few": write_film_folder(root / "few", positives=3, negatives=20, seed=22),
    }


def _meddx(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDDX_THREADS": "1", "MEDDX_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "meddx", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_the_trained_model_wins_with_an_interval_that_excludes_zero(
    films, tmp_path, tiny_model_dir, planted_model_dir, monkeypatch, capsys
):
    random, trained = f"local-dir:{tiny_model_dir}", f"local-dir:{planted_model_dir}"
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDDX_CACHE_DIR", str(cache))
    calibrate = [
        "calibrate",
        "--data",
        str(films["enough"]),
        "--model",
        trained,
        "--out",
        str(tmp_path / "cal"),
    ]
    assert main(calibrate) == 0
    report, plots = tmp_path / "compare.json", tmp_path / "plots"
    done = _meddx(
        "eval", "--data", str(films["enough"]), "--model", random, "--model", trained,
        "--calibration", "none", "--calibration", str(tmp_path / "cal"),
        "--json", str(report), "--plot", str(plots), cache=cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "40 images, scored by 2 models:" in out
    assert f"[1] model {random} @ sha256:" in out and f"[2] model {trained} @ sha256:" in out
    assert "(calibration " in out and "calibrated  20   20" in out  # the calibration's own rows for [2]
    result = json.loads(report.read_text())
    nodule = result["comparison"]["findings"]["nodule"]
    assert nodule["modes"] == {"1": "zero-shot", "2": "calibrated"}
    assert (nodule["positives"], nodule["negatives"]) == (20, 20)
    [difference] = nodule["differences"]
    assert (difference["first"], difference["second"]) == ("1", "2")
    assert difference["auroc"] < 0 and difference["ci"][1] < 0 and difference["significant"]
    assert nodule["auroc"]["2"] > nodule["auroc"]["1"]
    for tag in ("1", "2"):
        low, high = nodule["ci"][tag]
        assert low <= nodule["auroc"][tag] <= high
    low, high = difference["ci"]
    assert f"{difference['auroc']:+.3f} ({low:+.3f} to {high:+.3f})  yes: [2] higher" in out
    assert [m["model"]["spec"] for m in result["models"]] == [random, trained]
    assert result["models"][0]["calibration"] is None
    assert result["models"][1]["calibration"]["findings"] == ["nodule"]
    assert sorted(p.name for p in plots.iterdir()) == ["roc_nodule.png"]
    assert (plots / "roc_nodule.png").read_bytes().startswith(b"\x89PNG")
    assert str(films["enough"]) not in report.read_text(), "no local data path is stored"

    # Too few positives: no intervals, for each model and for the comparison.
    capsys.readouterr()
    assert main(["eval", "--data", str(films["few"]), "--model", random, "--model", trained]) == 0
    out = capsys.readouterr().out
    assert out.count("nodule: too few (3 positives, 20 negatives): no metrics or intervals") == 3
    assert "AUROC difference" not in out and "(0.00-0.00)" not in out


def test_heads_and_calibrations_pair_with_their_model_by_position(
    films, tmp_path, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.setenv("MEDDX_CACHE_DIR", str(tmp_path / "cache"))
    cache = ["--cache-dir", str(tmp_path / "embeddings")]
    random = f"local-dir:{tiny_model_dir}"
    calibrate = ["calibrate", "--data", str(films["enough"]), "--model", random, "--out", str(tmp_path / "c")]
    assert main([*calibrate, *cache]) == 0
    capsys.readouterr()
    two = [
        "eval",
        "--data",
        str(films["enough"]),
        "--model",
        random,
        "--model",
        f"local-dir:{tmp_path / 'x'}",
    ]
    assert main([*two, "--probe", "none", *cache]) == 2
    err = capsys.readouterr().err
    assert "2 --model but 1 --probe: give --probe once per --model, in the same order" in err
    assert err.count("\n") == 1

    # The calibration of model 1 given in position 2: refused with the model/revision tie, naming the pair.
    other = f"local-dir:{tmp_path / 'other'}"
    from meddx.dev.tiny import make_tiny_model

    make_tiny_model(tmp_path / "other", seed=1)
    both = ["eval", "--data", str(films["enough"]), "--model", random, "--model", other, *cache]
    assert main([*both, "--calibration", "none", "--calibration", str(tmp_path / "c")]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("meddx eval: --calibration number 2 is paired with --model number 2")
    assert "was measured on" in err
    assert main([*both, "--calibration", str(tmp_path / "c"), "--calibration", "none"]) == 0
    out = capsys.readouterr().out
    assert "calibrated" in out and "[1] - [2]" in out


def test_paired_auroc_and_the_sample_size_rule():
    rng = np.random.default_rng(0)
    targets = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    good = targets + rng.normal(0, 0.5, 60)
    noise = rng.normal(0, 1, 60)
    samples = resample_indices(60, 300, seed=1)
    result = paired_auroc(targets, {"good": good, "noise": noise, "same": good}, samples, [("good", "noise")])
    diff = result["differences"][("good", "noise")]
    assert diff["significant"] and diff["ci"][0] > 0
    assert diff["auroc"] == pytest.approx(result["auroc"]["good"] - result["auroc"]["noise"], abs=2e-4)
    # A score compared with itself differs by exactly 0 on every resample: the interval is [0, 0].
    same = paired_auroc(targets, {"a": good, "b": good}, samples, [("a", "b")])["differences"][("a", "b")]
    assert same["ci"] == [0.0, 0.0] and not same["significant"]
    with pytest.raises(ValueError):
        paired_auroc(np.ones(5, bool), {"a": np.ones(5)}, samples, [])

    assert MIN_PER_CLASS_FOR_INTERVALS == 10
    assert too_few(1, 8) == "too few (1 positive, 8 negatives)"
    assert too_few(10, 9) == "too few (10 positives, 9 negatives)"
    assert too_few(10, 10) is None
