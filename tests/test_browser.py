"""The page in headless Chromium (Debian's): upload, hostile notes, Analyze, results; desktop and phone.

Screenshots go to ``$MEDDX_SCREENSHOTS`` if set, else to a pytest temp folder; the path is printed (``-s``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import write_png

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)> 67M, productive cough and fever for 3 days. No pneumothorax."
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MEDDX_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nmeddx screenshots: {folder}")
    return folder


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_analyze_in_the_browser(browser, app_url, shots, tmp_path, viewport):
    from playwright.sync_api import expect

    film = write_png(tmp_path / "cxr.png")
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    page.set_default_timeout(60_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    trace: list[str] = []  # what the page did, shown if the upload never appears
    page.on("console", lambda message: trace.append(f"console {message.type}: {message.text[:300]}"))
    page.on("requestfailed", lambda request: trace.append(f"failed: {request.url[:150]} {request.failure}"))
    page.on("response", lambda r: trace.append(f"{r.status} {r.url[:150]}") if "upload" in r.url else None)
    page.goto(app_url)

    page.get_by_text("Decision support, not a diagnosis.").first.wait_for()
    # Gradio loads each component's code on demand: upload only once the upload area itself has rendered
    # and the page has stopped fetching, or the file can reach an input that nothing listens to yet.
    page.get_by_text("Click to Upload").first.wait_for()
    page.wait_for_load_state("networkidle")
    page.locator("input[type=file]").first.set_input_files(str(film))
    try:
        page.get_by_text("cxr.png").first.wait_for()
    except Exception:
        page.screenshot(path=str(shots / f"{viewport}-upload-failed.png"), full_page=True)
        raise AssertionError("the uploaded file never appeared; the page did:\n" + "\n".join(trace)) from None
    page.get_by_label("Clinical notes (optional)").fill(HOSTILE)
    page.get_by_role("button", name="Check notes").click()
    expect(page.locator("#meddx-notes")).to_contain_text("<img src=x onerror=alert(1)>", timeout=30_000)
    page.get_by_role("button", name="Analyze", exact=True).click()

    report = page.locator("#meddx-report")
    report.get_by_role("heading", name="Findings").wait_for(timeout=60_000)
    assert page.locator("#meddx-top").get_by_text("%").count() >= 3
    assert page.locator("#meddx-annotated img").first.is_visible()
    assert "research decision support, not a diagnosis." in report.inner_text()
    page.get_by_text(".html").first.wait_for()

    assert page.locator("img[src='x']").count() == 0, "the notes were rendered as HTML"
    page.screenshot(path=str(shots / f"{viewport}.png"), full_page=True)
    assert dialogs == []
    if viewport == "phone":
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORTS["phone"]["width"], "the page scrolls sideways at phone width"
    page.close()
