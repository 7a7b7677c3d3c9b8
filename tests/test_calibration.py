"""Zero-shot calibration: thresholds at a sensitivity, Wilson intervals, the ``calibrate`` CLI on generated
films with the tiny model, the loader's refusals, and honest flags in the pipeline (none without an
operating point; "no finding" never beside an abnormality; tiered, capped follow-ups)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from meddx.cli.train import run_calibrate
from meddx.errors import ModelError
from meddx.model.calibration import (
    CALIBRATION_CONFIG,
    Calibration,
    calibrated_probability,
    clear_calibration_cache,
    read_calibration,
)
from meddx.pipeline import analyze, warm_up
from meddx.report.render import render_markdown
from meddx.result import UNCALIBRATED
from meddx.train.calibrate import sensitivity_threshold, wilson_interval
from tests.helpers import write_calibration, write_film_folder, write_png


@pytest.fixture(autouse=True)
def _fresh_calibrations():
    clear_calibration_cache()
    yield
    clear_calibration_cache()


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    return write_film_folder(tmp_path_factory.mktemp("cal-films"), positives=24, negatives=30, seed=7)


# --- the rules -----------------------------------------------------------------------------------------


def test_threshold_at_a_sensitivity_is_the_highest_that_reaches_it():
    targets = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.3, 0.2, 0.5, 0.4, 0.25, 0.1])
    # 9 of 10 positives needed: the 9th highest positive is 0.3; the next lower score is 0.25.
    assert sensitivity_threshold(targets, scores, 0.9) == pytest.approx(0.275)
    flagged = scores >= 0.275
    assert flagged[targets].mean() == 0.9 and flagged[~targets].sum() == 2
    # 8 of 10: 0.6 is the 8th positive, 0.5 (a negative) the next lower score.
    assert sensitivity_threshold(targets, scores, 0.8) == pytest.approx(0.55)
    assert sensitivity_threshold(targets, scores, 0.999) == pytest.approx(0.15)  # every positive
    with pytest.raises(ValueError):
        sensitivity_threshold(np.zeros(3, bool), np.ones(3), 0.9)


def test_wilson_interval_matches_the_textbook():
    assert wilson_interval(18, 20) == pytest.approx([0.699, 0.9721], abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_calibration_keeps_the_ranking():
    p = np.array([0.01, 0.2, 0.49, 0.5, 0.51, 0.9, 0.999999])
    assert np.all(np.diff(calibrated_probability(p, 4.0, -0.3)) > 0)
    assert np.all(np.diff(calibrated_probability(p, 400.0, -0.3)) >= 0)  # saturates, never reorders
    assert calibrated_probability(0.5, 3.0, 0.0) == pytest.approx(0.5)


# --- the command ---------------------------------------------------------------------------------------


def test_calibrate_cli_writes_a_calibration_that_reproduces_its_numbers(
    films, tmp_path, tiny_model_dir, tiny_settings, capsys
):
    images = sorted(films.rglob("*.png"))
    rows = ["path,nodule,calcified granuloma"]
    rows += [f"{p},{int(p.parent.name == 'nodule')},{int(i < 3)}" for i, p in enumerate(images)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "cal"
    model = f"local-dir:{tiny_model_dir}"
    code = run_calibrate(["--data", str(tmp_path / "labels.csv"), "--out", str(out), "--model", model])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"MEDDX_CALIBRATION=local-dir:{out}" in printed
    assert "Calibrated 1 of 2 finding(s)" in printed
    assert (
        "calcified_granuloma: not calibrated, no threshold: too few (3 positives, 51 negatives); calibrating "
        "a finding needs at least 20 positive and 20 negative images" in printed
    )
    assert "calibrated probabilities are shown" not in printed
    meta = json.loads((out / CALIBRATION_CONFIG).read_text())
    nodule, granuloma = meta["findings"]["nodule"], meta["findings"]["calcified_granuloma"]
    assert (nodule["positives"], nodule["negatives"]) == (24, 30)
    assert 0 < nodule["threshold"] < 1 and nodule["sensitivity"] >= 0.9
    assert granuloma["threshold"] is None and granuloma["scale"] is None and granuloma["ece_after"] is None
    assert meta["encoder"]["spec"] == model and meta["target_sensitivity"] == 0.9
    assert str(tmp_path) not in json.dumps(meta), "no local path or file name is stored"
    card = (out / "README.md").read_text()
    assert "CSV, 54 images" in card and "| Lung nodule | 24 | 30 |" in card
    assert "measured on the data named here and on\n> nothing else" in card
    assert "**calcified granuloma**: not calibrated, no threshold: too few (3 positives" in card
    assert "calibrated probabilities are shown" not in card
    assert Calibration(meta).finding_ids == ("nodule",)

    # Served through the pipeline, the calibration flags exactly the films the card's numbers counted.
    settings = replace(tiny_settings, calibration=f"local-dir:{out}")
    flagged = []
    for path in images:
        result = analyze(path, settings=settings, labels=["nodule"], top_k=0).findings[0]
        assert result.operating_point == "calibration" and result.threshold == round(nodule["threshold"], 4)
        assert result.flagged == (result.image_probability >= result.threshold)
        flagged.append((result.flagged, path.parent.name == "nodule"))
    granuloma_result = analyze(images[0], settings=settings, labels=["calcified granuloma"], top_k=0)
    uncalibrated = granuloma_result.findings[0]
    assert uncalibrated.operating_point is None and uncalibrated.image_probability == uncalibrated.zero_shot
    positives_flagged = sum(f for f, positive in flagged if positive)
    negatives_clear = sum(not f for f, positive in flagged if not positive)
    assert positives_flagged == round(nodule["sensitivity"] * 24)
    assert negatives_clear == round(nodule["specificity"] * 30)


def test_calibrate_refuses_when_no_finding_has_enough_images(films, tmp_path, tiny_model_dir, capsys):
    images = sorted(films.rglob("*.png"))
    rows = ["path,nodule"] + [f"{p},{int(i < 12)}" for i, p in enumerate(images)]
    (tmp_path / "few.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "cal"
    args = ["--data", str(tmp_path / "few.csv"), "--out", str(out), "--model", f"local-dir:{tiny_model_dir}"]
    assert run_calibrate(args) == 2
    err = capsys.readouterr().err
    assert "No finding has enough labelled images to calibrate (nodule: 12 positives, 42 negatives)" in err
    assert err.count("\n") == 1 and not out.exists()
    # A lower minimum, asked for explicitly, calibrates it.
    assert run_calibrate([*args, "--min-positives", "10"]) == 0
    assert json.loads((out / CALIBRATION_CONFIG).read_text())["findings"]["nodule"]["scale"] > 0


def test_calibrate_refuses_bad_options(films, tmp_path, capsys):
    assert run_calibrate(["--data", str(films), "--out", str(tmp_path / "c"), "--sensitivity", "1.5"]) == 2
    assert "--sensitivity must be between 0 and 1" in capsys.readouterr().err
    assert run_calibrate(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2


# --- loading -------------------------------------------------------------------------------------------


def test_a_calibration_for_another_model_or_other_prompts_is_refused(
    tmp_path, tiny_settings, tiny_model_dir, other_model_dir
):
    folder = write_calibration(tmp_path / "cal", tiny_model_dir, {"nodule": 0.5})
    other = replace(tiny_settings, model=f"local-dir:{other_model_dir}", calibration=str(folder))
    with pytest.raises(ModelError, match=r"was measured on .* but the loaded model is"):
        warm_up(other)
    clear_calibration_cache()
    with pytest.raises(ModelError, match="MEDDX_CALIBRATION"):
        analyze(write_png(tmp_path / "f.png"), settings=other)

    meta = json.loads((folder / CALIBRATION_CONFIG).read_text())
    meta["findings"]["nodule"]["prompts_sha256"] = "0" * 64
    (folder / CALIBRATION_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="other prompts for nodule"):
        read_calibration(str(folder))
    (folder / CALIBRATION_CONFIG).write_text("{not json")
    with pytest.raises(ModelError, match="damaged"):
        read_calibration(str(folder))
    with pytest.raises(ModelError, match="not a meddx calibration"):
        read_calibration(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="damaged or not a meddx calibration"):
        Calibration({"format": "something else"})


# --- flags in the pipeline and the report --------------------------------------------------------------


def test_uncalibrated_scores_flag_nothing_and_say_so(tmp_path, tiny_settings):
    analysis = analyze(write_png(tmp_path / "f.png"), settings=tiny_settings, top_k=0)
    assert not analysis.flagged and not analysis.follow_ups()
    assert all(f.threshold is None and f.follow_up == "" for f in analysis.findings)
    assert analysis.flagging.statement == UNCALIBRATED and not analysis.flagging.calibrated
    text = render_markdown(analysis)
    assert "Nothing is flagged: the scores are uncalibrated" in text and "uncalibrated model outputs" in text
    assert "Suggested follow-up" not in text and "Urgent" not in text and "⚑" not in text
    assert "| Threshold | Flag |" not in text, "no threshold or flag columns without an operating point"


def test_user_threshold_is_reported_as_user_set(tmp_path, tiny_settings):
    analysis = analyze(write_png(tmp_path / "f.png"), settings=tiny_settings, top_k=0, threshold=0.3)
    assert {f.operating_point for f in analysis.findings} == {"user"}
    assert [p.source for p in analysis.flagging.operating_points] == ["user"]
    assert not analysis.flagging.calibrated
    text = render_markdown(analysis)
    assert "0.30 (user-set)" in text and "set by the user" in text and "never measured" in text


def test_no_finding_is_never_flagged_beside_an_abnormality_and_follow_ups_are_tiered_and_capped(
    tmp_path, tiny_settings, tiny_model_dir
):
    low = 0.001  # every calibrated probability is above it: these findings all reach their threshold
    thresholds = {
        fid: low for fid in ("no_finding", "atelectasis", "effusion", "nodule", "pneumothorax", "mass")
    }
    folder = write_calibration(tmp_path / "cal", tiny_model_dir, {**thresholds, "cardiomegaly": None})
    settings = replace(tiny_settings, calibration=str(folder))
    analysis = analyze(write_png(tmp_path / "f.png"), settings=settings, top_k=0)
    by_id = {f.id: f for f in analysis.findings}
    assert by_id["no_finding"].image_probability >= low and not by_id["no_finding"].flagged
    assert {f.id for f in analysis.flagged} == set(thresholds) - {"no_finding"}
    assert by_id["cardiomegaly"].threshold is None and not by_id["cardiomegaly"].flagged
    assert by_id["cardiomegaly"].operating_point is None  # calibrated, but too few positives for a threshold
    assert all(
        not f.flagged and f.operating_point is None for f in analysis.findings if f.id not in thresholds
    )
    tiers = {f.id: f.follow_up_tier for f in analysis.flagged}
    assert tiers == {"atelectasis": "routine", "effusion": "routine", "nodule": "routine"} | {
        "pneumothorax": "urgent",
        "mass": "urgent",
    }
    listed = analysis.follow_ups()
    assert len(listed) == 3 and {f.id for f in listed[:2]} == {"pneumothorax", "mass"}
    assert listed[2].follow_up_tier == "routine"
    text = render_markdown(analysis)
    section = text.split("### Suggested follow-up")[1].split("###")[0]
    assert section.count("- **Urgent** · ") == 2 and section.count("\n- ") == 4
    assert (
        "- 2 more flagged findings have a suggested follow-up; at most 3 are listed, urgent ones first."
        in section
    )
    statement = analysis.flagging.statement
    assert "Flags for 6 findings use thresholds from the calibration" in statement
    assert "The other 9 findings have no operating point" in statement
    assert analysis.to_dict()["flagging"]["calibrated"] is True
