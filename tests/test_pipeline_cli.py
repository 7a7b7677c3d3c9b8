"""`analyze` and the CLI end to end on a tiny model: DICOM and PNG in, JSON out, bad input handled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.errors import InputError
from meddx.pipeline import analyze
from tests.dicom_factory import PLANTED_IDENTIFIERS, write_dicom

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dicom_file(tmp_path):
    return write_dicom(tmp_path / "film.dcm")


@pytest.fixture
def png_file(tmp_path):
    path = tmp_path / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 240), dtype=np.uint8)).save(path)
    return path


def test_analyze_dicom(dicom_file, tiny_settings):
    analysis = analyze(dicom_file, settings=tiny_settings)
    data = analysis.to_dict()
    json.dumps(data)  # JSON-safe
    probs = [f["probability"] for f in data["findings"]]
    assert len(probs) == 15 and probs == sorted(probs, reverse=True)
    for f in data["findings"]:
        assert 0.0 <= f["probability"] <= 1.0
        assert f["flagged"] == (f["probability"] >= f["threshold"])
    assert data["model"]["spec"] == tiny_settings.model
    assert data["image"]["source_format"] == "dicom" and data["image"]["view_position"] == "PA"
    assert "not a diagnosis" in data["disclaimer"]
    assert data["timings"]["total_s"] > 0
    dumped = json.dumps(data)
    for value in PLANTED_IDENTIFIERS.values():
        assert value not in dumped


def test_analyze_labels_subset_and_custom(png_file, tiny_settings):
    analysis = analyze(
        png_file, labels=["nodule", "Pleural effusion", "pneumoperitoneum"], settings=tiny_settings
    )
    assert sorted(f.id for f in analysis.findings) == ["effusion", "nodule", "pneumoperitoneum"]
    assert next(f for f in analysis.findings if f.id == "pneumoperitoneum").custom


def test_analyze_bad_input(tmp_path, tiny_settings):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="accepts PNG"):
        analyze(bad, settings=tiny_settings)
    good = tmp_path / "ok.png"
    Image.new("L", (64, 64), 90).save(good)
    with pytest.raises(InputError, match="empty"):
        analyze(good, labels=[" ", ""], settings=tiny_settings)


def _run_cli(*args: str, env_model: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEDDX_MODEL=env_model, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "meddx", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_single_file_json(dicom_file, tiny_model_dir):
    result = _run_cli("analyze", str(dicom_file), "--json", env_model=f"local-dir:{tiny_model_dir}")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["findings"]) == 15
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_batch_continues_past_bad_file(tmp_path, dicom_file, png_file, tiny_model_dir):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = _run_cli(
        "analyze", str(tmp_path), "--labels", "nodule,effusion", env_model=f"local-dir:{tiny_model_dir}"
    )
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_file = {line["file"]: line for line in lines}
    assert set(by_file) == {"broken.jpg", "film.dcm", "film.png"}
    assert "error" in by_file["broken.jpg"] and len(by_file["film.png"]["findings"]) == 2
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_model_error_is_one_line(dicom_file, tmp_path):
    result = _run_cli("analyze", str(dicom_file), env_model=f"local-dir:{tmp_path / 'missing'}")
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_make_tiny_model_biomedclip_size_builds_and_analyzes(tmp_path, dicom_file):
    """BiomedCLIP's exact architecture with random weights: builds, loads, analyses."""
    from meddx.testing import make_tiny_model

    folder = make_tiny_model(tmp_path / "bmc", size="biomedclip")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert sum(1 for _ in (folder / "text_tower" / "vocab.txt").open()) == 30522
    result = _run_cli("analyze", str(dicom_file), "--json", env_model=f"local-dir:{folder}")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["findings"]) == 15
