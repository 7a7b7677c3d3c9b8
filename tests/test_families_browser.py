"""The page through Debian's Chromium on a non-default family: a tiny transformers SigLIP model (no class
token, attention-pooling head, 64-token sentencepiece prompts), upload, analyse, three Grad-CAM maps, and the
model card naming the family."""

from __future__ import annotations

import pytest

from tests.helpers import running_app, wait_until_ready, write_png


@pytest.mark.slow
def test_siglip_model_on_the_page(browser, family_model_dirs, tmp_path):
    from playwright.sync_api import expect

    from meddx.config import Settings

    # The drawn film has no lungs: show its scores at once, as the other page tests do (tests/conftest.py).
    settings = Settings(model=f"local-dir:{family_model_dirs['siglip']}", threads=1, hold_back=False)
    (tmp_path / "gradio").mkdir()
    with running_app(settings, tmp_path / "gradio") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_text("Decision support, not a diagnosis.").first.wait_for()
        wait_until_ready(page)
        film = write_png(tmp_path / "siglip-film.png")
        page.locator("#meddx-film input[type=file]").set_input_files(str(film))
        page.locator("#meddx-case").get_by_text(film.name).wait_for()
        page.get_by_role("button", name="Analyze", exact=True).click()
        page.wait_for_function(
            "() => document.querySelector('#meddx-case .prose').innerText.includes('analysed')",
            timeout=90_000,
        )
        expect(page.locator("#meddx-case")).to_contain_text("Grad-CAM (3 maps")
        page.wait_for_function(
            "() => document.querySelectorAll('#meddx-maps .thumbnail-item img').length > 0", timeout=60_000
        )
        alts = page.locator("#meddx-maps .thumbnail-item img").evaluate_all("imgs => imgs.map(i => i.alt)")
        assert len([a for a in dict.fromkeys(alts) if a]) == 3
        page.get_by_role("button", name="Model and privacy").click()  # the model card, in its folded panel
        expect(page.get_by_text("transformers SigLIP").first).to_be_visible()
        page.close()
