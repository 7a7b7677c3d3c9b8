"""Honest flags through the real app and `gradio_client`: uncalibrated scores flag nothing and say so; with
``MEDDX_CALIBRATION`` (written by the real ``calibrate`` command) flags fall exactly where the calibrated
probability reaches its threshold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from meddx.cli.train import run_calibrate
from meddx.config import Settings
from meddx.model.calibration import clear_calibration_cache
from meddx.pipeline import analyze
from tests.helpers import api_client, running_app, wait_until_ready, write_film_folder

pytestmark = pytest.mark.slow


def _check_flags(data: dict) -> None:
    """Every flag sits exactly at its operating point; "no finding" never beside an abnormality."""
    for f in data["findings"]:
        if f["threshold"] is None:
            assert not f["flagged"] and f["operating_point"] is None and f["follow_up"] == ""
        elif f["id"] != "no_finding":
            assert f["flagged"] == (f["image_probability"] >= f["threshold"]), f
        assert bool(f["follow_up"]) == (f["flagged"] and f["id"] != "no_finding")


def test_uncalibrated_scores_flag_nothing_and_say_so(client, tmp_path):
    from gradio_client import handle_file

    films = write_film_folder(tmp_path / "films", positives=1, negatives=1, seed=3)
    for film in sorted(films.rglob("*.png")):
        data, markdown = client.predict(handle_file(film), "cough and fever", maps=0, api_name="/analyze")
        assert not any(f["flagged"] for f in data["findings"])
        assert all(f["threshold"] is None and f["follow_up"] == "" for f in data["findings"])
        assert data["flagging"] == {
            "calibrated": False,
            "statement": data["flagging"]["statement"],
            "operating_points": [],
        }
        assert "uncalibrated" in data["flagging"]["statement"]
        assert "Nothing is flagged: the scores are uncalibrated" in markdown
        assert "Suggested follow-up" not in markdown and "Urgent" not in markdown
        assert data["reference"] in markdown


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_settings) -> tuple[Settings, Path]:
    """The real ``calibrate`` command on generated films; Settings as the app reads MEDDX_CALIBRATION."""
    root = tmp_path_factory.mktemp("flags")
    films = write_film_folder(root / "films", positives=20, negatives=20, seed=21)
    out = root / "calibration"
    assert run_calibrate(["--data", str(films), "--out", str(out), "--model", tiny_settings.model]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDX_CALIBRATION", f"local-dir:{out}")
        settings = replace(tiny_settings, calibration=Settings.from_env().calibration)
    assert settings.calibration == f"local-dir:{out}"
    return settings, films


@pytest.fixture(scope="module")
def calibrated_app(calibrated, tmp_path_factory):
    """The app serving the calibration, and the films it scores highest and lowest for a nodule."""
    settings, films = calibrated
    clear_calibration_cache()
    scored = {
        path: analyze(path, settings=settings, labels=["nodule"], top_k=0).findings[0]
        for path in sorted(films.rglob("*.png"))
    }
    highest = max(scored, key=lambda p: scored[p].image_probability)
    lowest = min(scored, key=lambda p: scored[p].image_probability)
    with running_app(settings, tmp_path_factory.mktemp("gradio-flags")) as url:
        yield url, scored, highest, lowest


def test_calibrated_scores_flag_exactly_at_their_threshold(calibrated_app):
    from gradio_client import handle_file

    url, scored, highest, lowest = calibrated_app
    client = api_client(url)
    seen = {}
    for film in (highest, lowest):
        data, markdown = client.predict(handle_file(film), "", maps=0, api_name="/analyze")
        _check_flags(data)
        nodule = next(f for f in data["findings"] if f["id"] == "nodule")
        assert nodule["operating_point"] == "calibration"
        assert nodule["image_probability"] == scored[film].image_probability
        assert nodule["zero_shot"] != nodule["image_probability"], "the probability is calibrated"
        assert data["flagging"]["calibrated"] is True
        assert [p["findings"] for p in data["flagging"]["operating_points"]] == [["nodule"]]
        assert "sensitivity 0.9" in data["flagging"]["statement"]
        assert "measured on that data only" in markdown
        seen[film] = nodule["flagged"]
        flagged = [f["id"] for f in data["findings"] if f["flagged"]]
        assert flagged == (["nodule"] if nodule["flagged"] else [])
    assert seen == {highest: True, lowest: False}


# --- the same on the page, in Chromium ------------------------------------------------------------------


def _report_on_the_page(browser, url: str, film: Path) -> str:
    """Upload ``film`` on the page, press Analyze, and return the report's text as shown."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    wait_until_ready(page)
    page.locator("#meddx-film input[type=file]").set_input_files(str(film))
    page.get_by_text(film.name).first.wait_for()
    page.get_by_role("button", name="Analyze", exact=True).click()
    page.locator("#meddx-findings table").first.wait_for()
    page.get_by_role("button", name="Report (what the downloads hold)").click()  # folded under the results
    report = page.locator("#meddx-report")
    try:
        report.get_by_role("heading", name="Findings").wait_for()
    except Exception:
        page.screenshot(path="/tmp/flags-page-fail.png", full_page=True)
        raise
    text = report.inner_text()
    page.close()
    return text


@pytest.mark.browser
def test_the_page_flags_nothing_uncalibrated_and_flags_at_the_calibrated_threshold(
    browser, calibrated_app, tiny_settings, tmp_path
):
    url, scored, highest, lowest = calibrated_app
    # One live app per upload folder at a time (running_app points GRADIO_TEMP_DIR at its own).
    with running_app(tiny_settings, tmp_path / "gradio") as plain_url:
        uncalibrated = _report_on_the_page(browser, plain_url, highest)
    assert "Nothing is flagged: the scores are uncalibrated" in uncalibrated
    assert "⚑" not in uncalibrated and "Suggested follow-up" not in uncalibrated
    flagged = _report_on_the_page(browser, url, highest)
    assert "1 finding reached its threshold: Lung nodule" in flagged and "⚑ yes" in flagged
    assert "Suggested follow-up" in flagged and "measured on that data only" in flagged
    assert scored[highest].flagged and not scored[lowest].flagged
    clear = _report_on_the_page(browser, url, lowest)
    assert "No finding reached its threshold" in clear and "⚑ yes" not in clear
