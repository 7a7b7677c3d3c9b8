"""The page in headless Chromium (Debian's), as a clinician uses it, at 1400 px and 390 px: one server start.

- desktop: an example, an upload with notes, Analyze; a click on a finding shows its map; the method is
  changed and Analyze pressed again without a new upload (a slow method: the progress moves map by map,
  and over the time budget the finished maps stay); a new upload clears everything; a bad file, then a good
  one; New patient; Ctrl+Enter.
- phone: hostile notes stay text, the results are scrolled into view, nothing is clipped sideways, the
  findings stack into cards.

The server is the real app with the tiny model, warmed up as ``app.py`` does, a folder of generated
example films (``MEDDX_EXAMPLES``) and a time budget of `BUDGET_S`. On the tiny model every method takes
milliseconds, so Integrated Gradients is slowed to `SLOW_MAP_S` per map (a sleep before the real method)
to stand for the real model's cost: the progress, budget and cost code paths are the real ones.

Screenshots go to ``$MEDDX_SCREENSHOTS`` if set, else to a pytest temp folder; the path is printed (``-s``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.explain.methods import DEFAULT_METHOD, METHOD_CARDS
from tests.helpers import running_app, wait_until_ready, write_png

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = "<img src=x onerror=alert(1)> 67M, productive cough and fever for 3 days. No pneumothorax."
VIEWPORTS = {"desktop": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
BUDGET_S = 9.0
SLOW_MAP_S = 2.5
DEFAULT_NAME = METHOD_CARDS[DEFAULT_METHOD].name


def write_film(path: Path, *, seed: int) -> Path:
    """Another synthetic film: noise, two bright fields."""
    rng = np.random.default_rng(seed)
    film = rng.integers(30, 90, (300, 260), dtype=np.uint8)
    film[60:200, 30:110] = 190
    film[60:200, 150:230] = 170
    Image.fromarray(film).save(path)
    return path


@pytest.fixture(scope="module")
def app_url(tiny_settings, gradio_tmp, tmp_path_factory):
    """The app with examples, a short budget and a slow Integrated Gradients (see the module docstring)."""
    from meddx import pipeline
    from meddx.config import Limits
    from meddx.explain.cost import COSTS

    examples = tmp_path_factory.mktemp("examples")
    write_png(examples / "example-a.png")
    write_film(examples / "example-b.png", seed=3)
    settings = dataclasses.replace(
        tiny_settings, examples=str(examples), limits=Limits(request_timeout_s=BUDGET_S)
    )
    real_film_maps = pipeline.film_maps

    def slow_film_maps(*args, **kwargs):
        if kwargs.get("method") == "integrated_gradients":
            time.sleep(SLOW_MAP_S)
        return real_film_maps(*args, **kwargs)

    COSTS.clear()
    pipeline.warm_up(settings)  # as app.py does: the model loaded, the map costs measured
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "film_maps", slow_film_maps)
        with running_app(settings, gradio_tmp) as url:
            yield url
    COSTS.clear()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("MEDDX_SCREENSHOTS") or "/tmp/meddx-shots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nmeddx screenshots: {folder}")
    return folder


def open_page(browser, app_url: str, viewport: str):
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    page.set_default_timeout(60_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app_url)
    page.get_by_text("Decision support, not a diagnosis.").first.wait_for()
    wait_until_ready(page)
    return page, dialogs


def upload(page, path: Path) -> None:
    page.locator("#meddx-film input[type=file]").set_input_files(str(path))
    page.locator("#meddx-case").get_by_text(path.name).wait_for()


def analyze(page, *, keyboard: bool = False) -> None:
    before = page.locator("#meddx-case .prose").first.inner_text()
    if keyboard:
        page.get_by_label("Clinical notes (optional)").press("Control+Enter")
    else:
        page.get_by_role("button", name="Analyze", exact=True).click()
    page.wait_for_function(
        "([before]) => { const t = document.querySelector('#meddx-case .prose').innerText;"
        " return t !== before && t.includes('analysed'); }",
        arg=[before],
        timeout=90_000,
    )


def map_captions(page) -> list[str]:
    """The maps in the gallery, by their captions (the alt text of each thumbnail)."""
    alts = page.locator("#meddx-maps .thumbnail-item img").evaluate_all("imgs => imgs.map(i => i.alt)")
    return [alt for alt in dict.fromkeys(alts) if alt]


def map_count(page) -> int:
    """How many maps the gallery shows, once its thumbnails have rendered."""
    page.wait_for_function(
        "() => { const g = document.querySelector('#meddx-maps');"
        " return !g || g.offsetParent === null || g.querySelectorAll('.thumbnail-item img').length > 0; }"
    )
    page.wait_for_timeout(300)
    return len(map_captions(page))


def assert_cleared(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#meddx-maps")).to_be_hidden()
    expect(page.locator("#meddx-notes")).to_be_hidden()
    assert page.locator("#meddx-findings table").count() == 0
    assert page.locator("#meddx-top").get_by_text("%").count() == 0
    assert page.get_by_text(".html").count() == 0, "the previous report is still offered for download"
    expect(page.locator("#meddx-report")).to_contain_text("the report appears here")


def no_error_badges(page) -> None:
    assert page.locator(".error").filter(has_text=re.compile(r"^\s*Error\s*$")).count() == 0


@pytest.fixture
def failure_shot(request, shots):
    """On failure, a screenshot of the page named after the test."""
    pages: list = []
    failed_before = request.session.testsfailed
    yield pages.append
    if request.session.testsfailed > failed_before:  # the call's report is counted before teardown
        for page in pages:
            if not page.is_closed():
                page.screenshot(path=str(shots / f"failed-{request.node.name}.png"), full_page=True)


def test_the_clinical_workflow_at_desktop_width(browser, app_url, shots, tmp_path, failure_shot):
    from playwright.sync_api import expect

    page, dialogs = open_page(browser, app_url, "desktop")
    failure_shot(page)
    # An example loads like an upload (generated films, from MEDDX_EXAMPLES).
    page.get_by_text("example-b.png").first.click()
    page.locator("#meddx-case").get_by_text("example-b.png").wait_for()
    expect(page.locator("#meddx-preview img")).to_have_attribute("alt", re.compile("example-b.png"))

    # An upload replaces it; the notes are read; results say which film they belong to.
    first = write_png(tmp_path / "patient-one.png")
    upload(page, first)
    page.get_by_label("Clinical notes (optional)").fill("67M, productive cough and fever for 3 days. Smoker.")
    analyze(page)
    expect(page.locator("#meddx-case")).to_contain_text("patient-one.png")
    expect(page.locator("#meddx-case")).to_contain_text(f"{DEFAULT_NAME} (3 maps")
    table = page.locator("#meddx-findings table")
    expect(table).to_contain_text("Image alone")
    expect(table).to_contain_text("With notes")
    expect(table).to_contain_text("points")  # a change the notes made, with its reason beside it
    expect(page.locator("#meddx-notes")).to_contain_text("present")  # the status in words, not colour only
    assert map_count(page) == 3
    page.screenshot(path=str(shots / "desktop-analysed.png"), full_page=True)

    # Clicking a finding in the top list shows its map.
    shown = page.locator("#meddx-maps [data-testid=detailed-image]")
    captions = map_captions(page)
    expect(shown).to_have_attribute("alt", captions[0])
    third = captions[2].split(":")[0]
    page.locator("#meddx-top").get_by_text(third, exact=True).first.click()
    expect(shown).to_have_attribute("alt", captions[2])
    expect(page.locator("#meddx-maps caption")).to_contain_text(f"{third}: {DEFAULT_NAME} map")

    # Another method, 5 maps, Analyze again: no new upload; the progress moves map by map; over the
    # budget the finished maps stay and the others are named.
    page.get_by_role("button", name="Advanced options").click()
    menu = page.locator("#meddx-method")
    expect(menu.locator("input")).to_have_value(re.compile("for 3 maps"))
    page.get_by_label("Number of maps").first.fill("5")
    page.get_by_label("Number of maps").first.press("Enter")
    menu.locator("input").click()
    page.get_by_role("option", name=re.compile("^Integrated Gradients")).click()
    expect(menu.locator("input")).to_have_value(re.compile("for 5 maps"))
    page.get_by_role("button", name="Analyze", exact=True).click()
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = page.locator("body").inner_text()
        seen.update(re.findall(r"Integrated Gradients map \d of 5", text))
        if "with Integrated Gradients (" in page.locator("#meddx-case .prose").first.inner_text():
            break  # the result is in
        time.sleep(0.2)
    assert len(seen) >= 2, f"the progress did not move map by map: {seen}"
    status = page.locator("#meddx-status")
    expect(status).to_contain_text(f"The time budget ({BUDGET_S:g} s) ran out after")
    kept = map_count(page)
    assert 1 <= kept < 5, kept
    expect(status).to_contain_text(f"after {kept} of 5 maps; not drawn:")
    expect(page.locator("#meddx-case")).to_contain_text("patient-one.png")
    expect(menu.locator("input")).to_have_value(re.compile("measured here"))
    page.screenshot(path=str(shots / "desktop-over-budget.png"), full_page=True)
    no_error_badges(page)

    # Back to Grad-CAM, 2 maps, for the next patient: a new upload clears everything at once.
    menu.locator("input").click()
    page.get_by_role("option", name=re.compile("^Grad-CAM")).click()
    page.get_by_label("Number of maps").first.fill("2")
    page.get_by_label("Number of maps").first.press("Enter")
    second = write_film(tmp_path / "patient-two.png", seed=1)
    upload(page, second)
    assert_cleared(page)
    expect(page.locator("#meddx-case")).to_contain_text("previous film's results and notes were cleared")
    assert page.get_by_label("Clinical notes (optional)").input_value() == ""
    assert "patient-one" not in page.locator("body").inner_text()

    # A bad file: the message, an upload box ready for the next file, no Error badges; then a good file.
    bad = tmp_path / "notes.png"
    bad.write_text("this is a text file, not an image\n")
    page.locator("#meddx-film input[type=file]").set_input_files(str(bad))
    expect(page.locator("#meddx-case .meddx-alert")).to_contain_text("notes.png")
    page.get_by_text("Click to Upload").first.wait_for()
    no_error_badges(page)
    page.screenshot(path=str(shots / "desktop-bad-file.png"), full_page=True)
    third_film = write_film(tmp_path / "patient-three.png", seed=2)
    upload(page, third_film)
    analyze(page, keyboard=True)  # Ctrl+Enter
    expect(page.locator("#meddx-case")).to_contain_text("patient-three.png")
    assert map_count(page) == 2

    # New patient: everything goes, the notes and the upload box too.
    page.get_by_label("Clinical notes (optional)").fill("Fever.")
    page.get_by_role("button", name="New patient").click()
    expect(page.locator("#meddx-case")).to_contain_text("No film yet")
    assert_cleared(page)
    assert page.get_by_label("Clinical notes (optional)").input_value() == ""
    page.get_by_role("button", name="Analyze", exact=True).click()
    expect(page.locator("#meddx-status")).to_contain_text("Upload a chest X-ray first")
    no_error_badges(page)
    assert dialogs == []
    page.close()


def test_the_default_map_appears_for_the_top_finding(browser, app_url, tmp_path, failure_shot):
    """The default method (the fastest that passed the faithfulness test, else Grad-CAM labelled as failing)
    draws the top finding's map first, and the method menu says which methods passed."""
    from playwright.sync_api import expect

    page, _ = open_page(browser, app_url, "desktop")
    failure_shot(page)
    upload(page, write_film(tmp_path / "patient-four.png", seed=4))
    analyze(page)
    expect(page.locator("#meddx-case")).to_contain_text(f"with {DEFAULT_NAME} (3 maps")
    lines = [line.strip() for line in page.locator("#meddx-top").inner_text().splitlines()]
    top = next(x for x in lines if x and not x.endswith("%") and "Top findings" not in x)  # the first finding
    shown = page.locator("#meddx-maps [data-testid=detailed-image]")
    expect(shown).to_have_attribute("alt", re.compile(f"^{re.escape(top)}: {re.escape(DEFAULT_NAME)} map"))
    assert map_captions(page)[0].startswith(f"{top}: {DEFAULT_NAME} map")
    expect(page.locator("#meddx-report")).to_contain_text(METHOD_CARDS[DEFAULT_METHOD].verdict)
    page.get_by_role("button", name="Advanced options").click()
    page.locator("#meddx-method input").click()
    for card in METHOD_CARDS.values():
        expect(page.get_by_role("option", name=re.compile(f"^{re.escape(card.name)} "))).to_contain_text(
            card.menu_note
        )
    no_error_badges(page)
    page.close()


def test_the_page_on_a_phone(browser, app_url, shots, tmp_path, failure_shot):
    from playwright.sync_api import expect

    page, dialogs = open_page(browser, app_url, "phone")
    failure_shot(page)
    upload(page, write_png(tmp_path / "cxr.png"))
    page.get_by_label("Clinical notes (optional)").fill(HOSTILE)
    page.get_by_role("button", name="Check notes").click()
    expect(page.locator("#meddx-notes")).to_contain_text("<img src=x onerror=alert(1)>", timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")
    analyze(page)
    page.locator("#meddx-report").get_by_role("heading", name="Findings").wait_for()
    assert page.locator("img[src='x']").count() == 0, "the notes were rendered as HTML"
    # The results were scrolled into view.
    page.wait_for_function(
        "() => document.getElementById('meddx-results').getBoundingClientRect().top < window.innerHeight",
        timeout=10_000,
    )
    assert page.evaluate("window.scrollY") > 0
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["phone"]["width"]
    # The findings, and the report's tables, stack into one card per row, each cell named.
    row = page.locator("#meddx-findings tbody tr").first
    assert row.evaluate("r => getComputedStyle(r).display") == "block"
    report_cell = page.locator("#meddx-report tbody td").first
    expect(report_cell).to_have_attribute("data-label", re.compile(r"\w"))
    for cell in page.locator("#meddx-findings td, #meddx-report td").all()[:40]:
        box = cell.bounding_box()
        assert box is None or box["x"] + box["width"] <= VIEWPORTS["phone"]["width"] + 1, "a clipped column"
    page.screenshot(path=str(shots / "phone-analysed.png"), full_page=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "phone-top.png"))
    assert dialogs == []
    page.close()
