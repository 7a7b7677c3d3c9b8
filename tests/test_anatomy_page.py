"""The page holds back the scores of a film without plausible lung fields behind "Analyse anyway" (real
Gradio server, real Chromium). The other page tests show the scores of their drawn films at once
(``hold_back=False`` in tests/conftest.py); this one turns the product's default back on."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from meddx.dev.non_chest import non_chest_image
from tests.helpers import running_app
from tests.test_browser import analyze, open_page, upload

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def held_url(tiny_settings, gradio_tmp):
    with running_app(dataclasses.replace(tiny_settings, hold_back=True), gradio_tmp) as url:
        yield url


def test_the_page_holds_back_the_scores_of_a_film_without_lungs(browser, held_url, tmp_path):
    from playwright.sync_api import expect

    path = tmp_path / "circuit-board.png"
    Image.fromarray(non_chest_image("circuit", seed=0)).save(path)
    page, dialogs = open_page(browser, held_url, "desktop")
    upload(page, path)
    analyze(page)
    expect(page.locator("#meddx-status")).to_contain_text("This may not be a frontal chest X-ray")
    summary = page.locator("#meddx-findings details.meddx-anyway > summary")
    expect(summary).to_contain_text("Analyse anyway")
    table = page.locator("#meddx-findings details.meddx-anyway table").first
    expect(table).to_be_hidden()
    expect(page.locator("#meddx-maps")).to_be_hidden()
    page.locator("#meddx-report-panel").get_by_text("Report (what the downloads hold)").click()
    expect(page.locator("#meddx-report")).to_contain_text("Report held back.")
    summary.click()
    expect(table).to_be_visible()
    expect(table).to_contain_text("Finding")
    assert dialogs == []
    page.close()
