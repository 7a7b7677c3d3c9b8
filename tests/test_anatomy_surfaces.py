"""The anatomy stage on every surface, through the real pipeline with the tiny encoder: a non-chest image
gets the warning in the JSON, the report and the CLI, and the page holds its scores back behind "Analyse
anyway"; with known lung fields (generated, so the test does not depend on what the shipped network makes of
a drawing) regions are named by the lungs, the CTR sits beside cardiomegaly on a PA film, and the overlay
draws the lung outlines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.anatomy import network
from meddx.anatomy.fields import from_masks
from meddx.anatomy.plausibility import WARNING
from meddx.anatomy.reading import from_fields
from meddx.dev.non_chest import non_chest_image
from meddx.report.render import render_html, render_markdown
from meddx.result import SCHEMA_VERSION
from tests.helpers import write_dicom
from tests.test_anatomy import H, W, chest

NOT_CHEST = WARNING.split(":")[0]


@pytest.fixture()
def circuit(tmp_path) -> Path:
    path = tmp_path / "circuit.png"
    Image.fromarray(non_chest_image("circuit", seed=0)).save(path)
    return path


def test_a_non_chest_image_is_warned_about_in_the_json_report_and_page(tiny_settings, circuit):
    from meddx.app import anyway
    from meddx.pipeline import analyze

    analysis = analyze(circuit, settings=tiny_settings, top_k=1)
    data = analysis.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION == 4
    assert data["anatomy"]["chest_film"] is False and data["anatomy"]["reasons"]
    assert any(w.startswith(NOT_CHEST) for w in data["warnings"])
    assert data["findings"], "the API still returns the scores, with the warning"
    markdown = render_markdown(analysis)
    summary = markdown.split("### Summary")[1].split("### Findings")[0]
    assert "> **Warning:** This may not be a frontal chest X" in summary  # at the top, not only in the list
    assert NOT_CHEST in render_html(analysis).split("<h2>Summary</h2>")[1][:2000]
    shown = {"captions": "<p>map 1</p>", "gallery": "g", "table": "<table>scores</table>", "report": markdown}
    held = anyway.hold_back(
        analysis, shown, gallery="gallery", captions="captions", table="table", report="report"
    )
    assert held["captions"] == "" and held["gallery"].visible is False
    assert held["table"].count("<details") == 1 and "<summary>Analyse anyway" in held["table"]
    assert held["table"].index("<table>scores</table>") > held["table"].index("<summary>")
    assert held["report"].startswith("**Report held back.**") and "0." not in held["report"]


def test_the_cli_prints_the_warning(tiny_model_dir, circuit, capsys):
    from meddx.cli import main

    assert main(["analyze", str(circuit), "--model", f"local-dir:{tiny_model_dir}", "--top-k", "0"]) == 0
    assert f"warning: {NOT_CHEST}" in capsys.readouterr().out


@pytest.fixture()
def known_lungs(monkeypatch):
    """The pipeline's anatomy stage fed generated lung fields (those of `tests.test_anatomy.chest`)."""
    film, right, left = chest()

    def read(grey: np.ndarray, view: str | None):
        return from_fields(from_masks(right, left), network.prepare(film)[0, 0].numpy(), view)

    monkeypatch.setattr("meddx.pipeline.read_anatomy", read)
    return film


def test_known_lung_fields_name_regions_and_give_the_ctr_on_a_pa_film(tiny_settings, known_lungs, tmp_path):
    from meddx.pipeline import analyze

    path = write_dicom(tmp_path / "pa.dcm", known_lungs.astype(np.uint16) * 16, view_position="PA")
    analysis = analyze(path, settings=tiny_settings, labels=["cardiomegaly", "nodule"], top_k=2)
    data = json.loads(json.dumps(analysis.to_dict()))
    assert data["anatomy"] == {**data["anatomy"], "lung_fields": True, "chest_film": True, "reasons": []}
    cardiomegaly = next(f for f in data["findings"] if f["id"] == "cardiomegaly")
    assert (
        cardiomegaly["measurement"].startswith("CTR ≈ ")
        and "not valid on AP films" in cardiomegaly["measurement"]
    )
    assert data["anatomy"]["ctr"]["valid"] and 0.1 < data["anatomy"]["ctr"]["value"] < 0.6
    assert all(f["measurement"] is None for f in data["findings"] if f["id"] != "cardiomegaly")
    regions = [r for f in data["findings"] for r in f["regions"]]
    assert regions and all(isinstance(r["in_lungs"], bool) for r in regions)
    assert all(r["location"].startswith("outside the lungs: ") != r["in_lungs"] for r in regions)
    assert not any(NOT_CHEST in w for w in data["warnings"])
    assert "CTR ≈ " in render_markdown(analysis) and "CTR ≈ " in render_html(analysis)
    mapped = analysis.explanation.mapped[0]
    lines = analysis.anatomy.outline(H, W)
    with_lines = analysis.overlay(mapped)
    analysis.anatomy = None
    without = analysis.overlay(mapped)
    assert (with_lines[lines] > without[lines]).any() and np.array_equal(with_lines[~lines], without[~lines])


@pytest.mark.parametrize("view", ["AP", None])
def test_the_ctr_is_not_valid_on_ap_or_unknown_views(tiny_settings, known_lungs, tmp_path, view):
    from meddx.pipeline import analyze

    if view:
        path = write_dicom(tmp_path / "ap.dcm", known_lungs.astype(np.uint16) * 16, view_position=view)
    else:
        path = tmp_path / "film.png"
        Image.fromarray(known_lungs).save(path)
    analysis = analyze(path, settings=tiny_settings, labels=["cardiomegaly"], top_k=0)
    text = analysis.findings[0].measurement
    assert text.startswith("CTR not estimated: the view is ") and "valid only on a PA frontal film" in text
    assert analysis.to_dict()["anatomy"]["ctr"]["value"] is None
