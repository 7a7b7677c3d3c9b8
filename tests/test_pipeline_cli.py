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

from meddx.config import Settings
from meddx.errors import InputError
from meddx.pipeline import analyze
from tests.helpers import PLANTED_IDENTIFIERS, write_dicom

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
        # no calibration and no head: no operating point, nothing flagged, no follow-up suggested
        assert f["threshold"] is None and f["operating_point"] is None
        assert not f["flagged"] and f["follow_up"] == "" and f["follow_up_tier"] is None
    assert not data["flagging"]["calibrated"] and "uncalibrated" in data["flagging"]["statement"]
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
def test_cli_regions_overlays_and_map_options(tmp_path, dicom_file, tiny_model_dir):
    model = f"local-dir:{tiny_model_dir}"
    result = _run_cli(
        "analyze",
        str(dicom_file),
        "--json",
        "--top-k",
        "2",
        "--overlays",
        str(tmp_path / "ov"),
        env_model=model,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    mapped = data["explanation"]["mapped"]
    assert data["explanation"]["method"] == "gradcam" and len(mapped) == 2
    assert data["overlay_files"] == [str(tmp_path / "ov" / f"film.{fid}.png") for fid in mapped]
    for path in data["overlay_files"]:
        band = json.loads(Path(path).with_suffix(".json").read_text())["film_offset_y"]
        with Image.open(path) as overlay:  # the film's full size, in colour, under a title band
            size = (data["image"]["width"], data["image"]["height"] + band)
            assert overlay.size == size and overlay.mode == "RGB"
    regions = [r for f in data["findings"] if f["id"] in mapped for r in f["regions"]]
    assert regions and all(len(r["box"]) == 4 and r["location"] and 0 < r["score"] <= 1 for r in regions)
    assert all(not f["regions"] for f in data["findings"] if f["id"] not in mapped)
    assert "maps_png" not in data

    result = _run_cli(
        "analyze", str(dicom_file), "--map", "Pleural effusion, nodule", "--method", "occlusion",
        "--include-maps", "--json", env_model=model,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["explanation"] == {
        "method": "occlusion",
        "mapped": ["effusion", "nodule"],
        "location_note": None,
    }
    assert set(data["maps_png"]) == {"effusion", "nodule"}

    batch = tmp_path / "batch"
    for folder in ("a", "b"):  # the same file name in two folders must not share overlay files
        (batch / folder).mkdir(parents=True)
        (batch / folder / "image.dcm").write_bytes(dicom_file.read_bytes())
    result = _run_cli(
        "analyze", str(batch), "--top-k", "1", "--overlays", str(tmp_path / "ov3"), env_model=model
    )
    assert result.returncode == 0, result.stderr
    files = [json.loads(line)["overlay_files"] for line in result.stdout.splitlines()]
    assert [Path(f[0]).name.split(".")[0] for f in files] == ["image", "image-2"]
    assert (
        len(list((tmp_path / "ov3").glob("*.png"))) == 2 and len(list((tmp_path / "ov3").glob("*.json"))) == 2
    )

    summary = _run_cli("analyze", str(dicom_file), "--map", "nodule", env_model=model)
    assert summary.returncode == 0 and "region: " in summary.stdout
    for bad in (
        ["--method", "saliency"],
        ["--top-k", "-1"],
        ["--threshold", "2"],
        ["--map", "no such thing"],
    ):
        result = _run_cli("analyze", str(dicom_file), *bad, env_model=model)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (bad, result.stderr)
        assert "Traceback" not in result.stderr


def test_cli_refuses_one_set_of_notes_for_several_films(tmp_path, dicom_file, tiny_model_dir):
    for paths in ([str(tmp_path)], [str(dicom_file), str(dicom_file)]):
        result = _run_cli("analyze", *paths, "--notes", "Fever.", env_model=f"local-dir:{tiny_model_dir}")
        assert result.returncode == 2 and result.stdout == ""
        assert "describe one patient" in result.stderr and "--notes-column" in result.stderr
        assert result.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_cli_model_error_is_one_line(dicom_file, tmp_path):
    result = _run_cli("analyze", str(dicom_file), env_model=f"local-dir:{tmp_path / 'missing'}")
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_attribution_check_prints_the_evidence_table(tmp_path):
    out = tmp_path / "evidence.json"
    result = _run_cli(
        "attribution-check", "--images", "2", "--steps", "5", "--threads", "1", "--seeds", "7",
        "--methods", "gradcam,legrad,rollout@3", "--no-timing", "--json", str(out), env_model="unused",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2 held-out 192-px films per seed")
    rows = [line.split() for line in lines[3:] if not line.startswith(" ")]
    assert [row[:2] for row in rows] == [["gradcam", "7"], ["legrad", "7"], ["rollout@3", "7"]]
    assert "trained the planted tiny model (5 steps)" in result.stderr
    evidence = json.loads(out.read_text())["evidence"]
    assert [e["method"] for e in evidence] == ["gradcam", "legrad", "rollout@3"]
    assert {"deletion", "insertion", "passes", "randomised_pointing"} <= set(evidence[0])


@pytest.mark.slow
def test_make_tiny_model_biomedclip_size_builds_and_analyzes(tmp_path, dicom_file):
    """BiomedCLIP's exact architecture with random weights: builds, loads, analyses."""
    from meddx.dev.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path / "bmc", size="biomedclip")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert sum(1 for _ in (folder / "text_tower" / "vocab.txt").open()) == 30522
    result = _run_cli("analyze", str(dicom_file), "--json", env_model=f"local-dir:{folder}")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["findings"]) == 15


NOTES = "58-year-old smoker, 3 weeks of cough, no fever; no pneumothorax. History of right pleural effusion."


def test_analyze_with_notes_shows_evidence_and_moves_probabilities(dicom_file, tiny_settings):
    plain = {f.id: f for f in analyze(dicom_file, settings=tiny_settings).findings}
    with_notes = analyze(dicom_file, NOTES, settings=tiny_settings)
    by_id = {f.id: f for f in with_notes.findings}
    assert with_notes.notes.findings == {"pneumothorax": "absent", "effusion": "historical"}
    assert any(c.name == "smoking" for c in with_notes.notes.concepts)
    # Image-only probability is unchanged by notes; the combined one moves with visible evidence.
    assert by_id["pneumothorax"].image_probability == plain["pneumothorax"].probability
    assert by_id["pneumothorax"].probability < by_id["pneumothorax"].image_probability
    assert by_id["pneumothorax"].evidence[0].status == "absent"
    assert by_id["nodule"].probability > by_id["nodule"].image_probability
    assert any(e.concept == "smoking" for e in by_id["nodule"].evidence)
    # A finding without evidence keeps its image probability exactly.
    assert (
        by_id["fracture"].probability == by_id["fracture"].image_probability
        and not by_id["fracture"].evidence
    )


def test_analyze_maps_regions_for_top_findings(dicom_file, tiny_settings):
    analysis = analyze(dicom_file, settings=tiny_settings, top_k=2, include_maps=True)
    mapped = analysis.explanation.mapped
    assert len(mapped) == 2 and "no_finding" not in mapped
    assert set(analysis.maps) == set(mapped)
    for finding_id in mapped:
        assert analysis.maps[finding_id].on_film().shape == analysis.preview.shape
        assert analysis.overlay(finding_id).shape == (*analysis.preview.shape, 3)
        assert max(analysis.overlay(finding_id, max_side=100).shape) == 100
    data = analysis.to_dict()
    assert set(data["maps_png"]) == set(mapped)
    mapped_results = [f for f in data["findings"] if f["id"] in mapped]
    assert any(f["regions"] for f in mapped_results)
    for f in mapped_results:
        for region in f["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 256
            assert region["location"]
    assert analysis.explanation.location_note is None  # ViewPosition PA was given


def test_analyze_options_are_validated(dicom_file, tiny_settings):
    with pytest.raises(InputError, match="explanation method"):
        analyze(dicom_file, settings=tiny_settings, method="magic")
    with pytest.raises(InputError, match="needs a trained head"):
        analyze(dicom_file, settings=tiny_settings, mode="fine-tuned")
    with pytest.raises(InputError, match="threshold"):
        analyze(dicom_file, settings=tiny_settings, threshold=1.5)
    none = analyze(dicom_file, settings=tiny_settings, top_k=0, threshold=0.999)
    assert not none.maps and not none.flagged


@pytest.mark.slow
def test_train_then_analyze_with_probe_then_eval(tmp_path, tiny_model_dir, other_model_dir, capsys):
    """The issue's end-to-end path: train -> analyze --probe local-dir:OUT -> eval, on an image folder."""
    from dataclasses import replace

    from meddx.cli.train import run_eval, run_train
    from tests.helpers import write_film_folder

    model = f"local-dir:{tiny_model_dir}"
    train = write_film_folder(tmp_path / "train", positives=20, negatives=40, seed=11)
    held = write_film_folder(tmp_path / "held", positives=10, negatives=20, seed=12)
    head_dir = tmp_path / "head"
    assert run_train(["--data", str(train), "--out", str(head_dir), "--model", model]) == 0
    settings = Settings(model=model, probe=f"local-dir:{head_dir}", threads=1)
    film = next(held.rglob("*.png"))
    both = analyze(film, settings=settings)
    assert both.scoring.mode == "both" and both.scoring.probe.spec == settings.probe
    nodule = next(f for f in both.findings if f.id == "nodule")
    assert nodule.fine_tuned is not None
    assert all(f.fine_tuned is None for f in both.findings if f.id != "nodule")
    assert nodule.operating_point == "trained head" and nodule.threshold is not None
    assert nodule.flagged == (nodule.image_probability >= nodule.threshold)
    assert [p.source for p in both.flagging.operating_points] == ["trained head"]
    assert all(not f.flagged and f.threshold is None for f in both.findings if f.id != "nodule")
    fine = next(f for f in analyze(film, settings=settings, mode="fine-tuned").findings if f.id == "nodule")
    assert fine.image_probability == nodule.fine_tuned
    zero = next(f for f in analyze(film, settings=settings, mode="zero-shot").findings if f.id == "nodule")
    assert zero.image_probability == zero.zero_shot
    report = tmp_path / "eval.json"
    assert (
        run_eval(["--data", str(held), "--model", model, "--probe", settings.probe, "--json", str(report)])
        == 0
    )
    metrics = json.loads(report.read_text())
    assert "nodule" in json.dumps(metrics)
    # A head trained on another encoder is refused at start-up (warm_up), with a clear message.
    from meddx.errors import ModelError
    from meddx.pipeline import warm_up

    with pytest.raises(ModelError, match="trained on"):
        warm_up(replace(settings, model=f"local-dir:{other_model_dir}"))
