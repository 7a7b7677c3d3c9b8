"""Feedback in the live app (tiny model): through ``gradio_client`` and through the page in Chromium, records
land with exactly the allowed fields and nothing else; without ``MEDDX_FEEDBACK_DIR`` there is no feedback.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from meddx.model.encoder import load_encoder
from meddx.train.embedding_cache import embed_sources
from meddx.train.feedback import FIELDS
from tests.helpers import api_client, running_app, write_png

CHROMIUM = Path("/usr/bin/chromium")
NOTES = "Mr Zebedee Quux, 58, smoker; cough for 3 weeks"


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback-records")


@pytest.fixture(scope="module")
def feedback_url(tiny_settings, gradio_tmp, feedback_dir):
    with running_app(replace(tiny_settings, feedback_dir=feedback_dir), gradio_tmp) as url:
        yield url


@pytest.fixture(scope="module")
def feedback_client(feedback_url):
    return api_client(feedback_url)


def _records(folder: Path) -> list[dict]:
    return [
        json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def test_feedback_through_the_api_keeps_exactly_the_allowed_fields(
    feedback_client, feedback_dir, tmp_path, tiny_model_dir
):
    from gradio_client import handle_file

    film = write_png(tmp_path / "SMITH_JOHN_1970-01-01.png")
    result, _ = feedback_client.predict(handle_file(str(film)), NOTES, api_name="/analyze")
    feedback_id = result["feedback_id"]
    assert len(feedback_id) == 32
    before = len(_records(feedback_dir))
    kept = feedback_client.predict(
        feedback_id,
        {"nodule": "present", "effusion": "absent", "cardiomegaly": ""},
        ["pneumothorax"],
        api_name="/feedback",
    )
    assert tuple(kept) == FIELDS
    records = _records(feedback_dir)
    assert len(records) == before + 1
    record = records[-1]
    assert record == kept and set(record) == set(FIELDS)
    assert record["id"] != feedback_id  # the id handed out is not stored
    assert record["labels"] == {"nodule": "present", "effusion": "absent"} and record["missed"] == [
        "pneumothorax"
    ]
    assert record["scoring_mode"] == "zero-shot" and record["model"]["spec"] == f"local-dir:{tiny_model_dir}"
    shown = {f["id"]: f["zero_shot"] for f in result["findings"] if not f["custom"]}
    assert {fid: s["zero_shot"] for fid, s in record["scores"].items()} == shown
    # The embedding is the film's, as training would compute it from the file.
    expected = embed_sources(load_encoder(f"local-dir:{tiny_model_dir}"), [film])[0]
    torch.testing.assert_close(torch.tensor(record["embedding"]), expected, atol=1e-4, rtol=1e-4)
    text = "\n".join(p.read_text() for p in feedback_dir.rglob("*"))
    for leaked in ("SMITH", "Zebedee", "smoker", "127.0.0.1", ".png"):
        assert leaked not in text

    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="can no longer take feedback"):  # one answer per result
        feedback_client.predict(feedback_id, {"nodule": "absent"}, [], api_name="/feedback")
    result, _ = feedback_client.predict(handle_file(str(film)), api_name="/analyze")
    with pytest.raises(AppError, match="free-text findings are never kept"):
        feedback_client.predict(
            result["feedback_id"], {"Mr Quux's mass": "present"}, [], api_name="/feedback"
        )
    assert len(_records(feedback_dir)) == before + 1


def test_without_a_feedback_folder_there_is_no_feedback(client, tmp_path):
    from gradio_client import handle_file

    result, _ = client.predict(handle_file(str(write_png(tmp_path / "cxr.png"))), api_name="/analyze")
    assert "feedback_id" not in result
    assert "/feedback" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.browser
@pytest.mark.slow
def test_feedback_through_the_page(feedback_url, feedback_dir, tmp_path):
    from playwright.sync_api import expect

    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    film = write_png(tmp_path / "DOE_JANE.png")
    before = len(_records(feedback_dir))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(feedback_url)
            # Upload only once the upload area has rendered and the page is idle (see test_browser.py).
            page.get_by_text("Click to Upload").first.wait_for()  # not "networkidle": a heartbeat stays open
            page.locator("input[type=file]").first.wait_for(state="attached")
            page.wait_for_timeout(500)
            page.locator("input[type=file]").first.set_input_files(str(film))
            page.get_by_text("DOE_JANE.png").first.wait_for()
            page.get_by_role("button", name="Analyze", exact=True).click()
            page.locator("#meddx-findings table").first.wait_for()  # the results are in
            panel = page.locator("#meddx-feedback")
            expect(panel).to_be_visible()
            # What is kept is said before anything is sent.
            expect(page.locator("#meddx-feedback-notice")).to_contain_text(
                "It never keeps the image, the notes"
            )
            assert len(_records(feedback_dir)) == before
            page.locator("#meddx-answer-nodule").get_by_label("present").check()
            page.locator("#meddx-answer-effusion").get_by_label("absent").check()
            page.get_by_role("button", name="Send feedback").click()
            expect(page.locator("#meddx-feedback-status")).to_contain_text("Thank you")
            page.screenshot(path=str(tmp_path / "feedback.png"), full_page=True)
        finally:
            browser.close()
    records = _records(feedback_dir)
    assert len(records) == before + 1
    assert set(records[-1]) == set(FIELDS)
    assert records[-1]["labels"] == {"nodule": "present", "effusion": "absent"}
    assert "DOE" not in json.dumps(records[-1])


@pytest.mark.slow
def test_analyse_answer_retrain_promote_and_serve_the_better_head(tiny_settings, tmp_path, gradio_tmp):
    """The whole loop, offline on the tiny model: page API -> feedback -> train -> promote -> restart."""
    from gradio_client import handle_file

    from meddx.cli.train import run_promote, run_train
    from meddx.dev.feedback_loop import write_films
    from meddx.model.head_store import clear_head_cache, load_head

    labelled = write_films(tmp_path / "labelled", positives=4, negatives=8, seed=1)
    held_out = write_films(tmp_path / "held_out", positives=20, negatives=40, seed=100)
    seen = write_films(tmp_path / "seen", positives=12, negatives=24, seed=11)
    common = ["--model", tiny_settings.model, "--cache-dir", str(tmp_path / "embeddings")]
    current, candidate, records = tmp_path / "current", tmp_path / "candidate", tmp_path / "feedback"
    assert run_train(["--data", str(labelled), "--out", str(current), "--epochs", "1", *common]) == 0
    settings = replace(tiny_settings, probe=f"local-dir:{current}", feedback_dir=records)

    with running_app(settings, gradio_tmp) as url:
        client = api_client(url)
        for film in sorted(seen.rglob("*.png")):
            result, _ = client.predict(handle_file(str(film)), maps=0, api_name="/analyze")
            answer = "present" if film.parent.name == "nodule" else "absent"
            client.predict(result["feedback_id"], {"nodule": answer}, [], api_name="/feedback")
    kept = _records(records)
    assert len(kept) == 36 and {r["scoring_mode"] for r in kept} == {"both"}
    assert all(r["scores"]["nodule"]["fine_tuned"] is not None for r in kept)

    args = ["--data", str(labelled), "--data", f"feedback:{records}", "--out", str(candidate)]
    assert run_train([*args, *common]) == 0
    promote = ["--candidate", str(candidate), "--current", str(current), "--data", str(held_out)]
    assert run_promote([*promote, *common]) == 0
    clear_head_cache()
    served = load_head(f"local-dir:{current}")
    assert served.metadata["history"][-1]["decision"] == "promoted"
    assert served.metadata["data"]["feedback"]["records"] == 36

    film = sorted(held_out.rglob("*.png"))[0]
    with running_app(settings, gradio_tmp) as url:  # restarted with the same MEDDX_PROBE
        result, _ = api_client(url).predict(handle_file(str(film)), maps=0, api_name="/analyze")
    embedding = embed_sources(load_encoder(tiny_settings.model), [film])
    expected = float(served.probabilities(embedding)[0, served.finding_ids.index("nodule")])
    nodule = next(f for f in result["findings"] if f["id"] == "nodule")
    assert nodule["fine_tuned"] == pytest.approx(expected, abs=1e-3)
