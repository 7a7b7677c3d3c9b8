"""The real app, launched in-process on a free port with the tiny model, called through `gradio_client`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meddx.errors import InputError
from tests.helpers import PLANTED_IDENTIFIERS, files_under, write_dicom, write_png

pytestmark = pytest.mark.slow


@pytest.fixture
def png(tmp_path) -> Path:
    return write_png(tmp_path / "cxr.png")


def _check_result(data: dict, markdown: str) -> None:
    assert data["findings"], "no findings scored"
    assert data["model"]["spec"].startswith("local-dir:")
    assert data["disclaimer"] in markdown
    assert data["report_markdown"].strip() == markdown.strip()
    assert "### Findings" in markdown
    probabilities = [f["probability"] for f in data["findings"]]
    assert all(0.0 <= p <= 1.0 for p in probabilities)


def test_api_lists_the_public_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/analyze", "/notes", "/fhir"}
    parameters = endpoints["/analyze"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == [
        "film",
        "notes",
        "findings",
        "custom_findings",
        "scoring_mode",
        "attribution_method",
        "maps",
        "threshold",
    ]
    assert [p["parameter_name"] for p in parameters if not p["parameter_has_default"]] == ["film"]
    assert [p["parameter_name"] for p in endpoints["/notes"]["parameters"]] == ["notes"]


def test_analyze_png_through_the_client(client, png, gradio_tmp):
    from gradio_client import handle_file

    data, markdown = client.predict(
        handle_file(png), "Productive cough and fever. No pneumothorax.", api_name="/analyze"
    )
    _check_result(data, markdown)
    assert data["image"]["source_format"] == "png"
    assert files_under(gradio_tmp) == [], "the upload was not deleted after the request"


def test_analyze_dicom_keeps_no_identifier(client, tmp_path, gradio_tmp):
    from gradio_client import handle_file

    path = write_dicom(tmp_path / "cxr.dcm")
    data, markdown = client.predict(
        handle_file(path), "", ["pneumothorax"], "hiatus hernia", api_name="/analyze"
    )
    _check_result(data, markdown)
    assert data["image"]["source_format"] == "dicom"
    assert {f["id"] for f in data["findings"]} == {"pneumothorax", "hiatus_hernia"}
    text = json.dumps(data) + markdown
    for value in PLANTED_IDENTIFIERS.values():
        assert value not in text
    assert "Doe" not in text
    assert files_under(gradio_tmp) == []


def test_notes_endpoint_returns_concepts(client):
    result = client.predict("No pleural effusion. Fever for 3 days.", api_name="/notes")
    concepts = {c["name"]: c["status"] for c in result["concepts"]}
    assert concepts.get("effusion") == "absent"
    assert all({"start", "end", "text", "status"} <= set(c) for c in result["concepts"])


def test_while_the_model_loads_notes_answer_at_once_and_an_analysis_waits_for_it(client, png, gradio_tmp):
    """``app.py`` serves the page while `MODEL` loads: here a load held open by the test stands for it."""
    import threading

    from gradio_client import handle_file

    from meddx.app.loading import MODEL

    release, failures = threading.Event(), []
    MODEL.start(lambda: release.wait(60), on_error=failures.append)
    try:
        assert not MODEL.ready
        assert client.predict("No fever.", api_name="/notes")["concepts"]  # no model needed: answered now
        job = client.submit(handle_file(png), "", api_name="/analyze")
        threading.Event().wait(2.0)
        assert not job.done()  # waiting for the model, not failed
        release.set()
        data = json.loads(json.dumps(job.result(timeout=120)[0]))
        assert data["findings"] and MODEL.ready and not failures
    finally:
        release.set()
    assert files_under(gradio_tmp) == []


def test_model_loading_reports_while_waiting_and_hands_a_failure_to_its_owner():
    import threading

    from meddx.app.loading import WAIT_STEP_S, ModelLoading

    loading = ModelLoading()
    assert loading.ready
    loading.wait()  # nothing started: returns at once
    release, said = threading.Event(), []
    loading.start(lambda: release.wait(30), on_error=said.append)
    threading.Timer(3 * WAIT_STEP_S, release.set).start()
    loading.wait(said.append)
    assert loading.ready and said and all(s.startswith("Loading the model (started") for s in said)

    failed = ModelLoading()
    errors = []
    failed.start(lambda: 1 / 0, on_error=errors.append).join(10)
    assert isinstance(errors[0], ZeroDivisionError) and not failed.ready


def test_corrupt_file_gives_a_readable_error_and_the_app_keeps_serving(client, tmp_path, png, gradio_tmp):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(broken), "", api_name="/analyze")
    message = str(caught.value)
    assert "broken.png" in message
    assert "Traceback" not in message
    assert files_under(gradio_tmp) == []

    data, markdown = client.predict(handle_file(png), "", api_name="/analyze")
    _check_result(data, markdown)


def test_too_long_notes_are_refused_with_the_limit(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="too long"):
        client.predict("x" * 20_001, api_name="/notes")


def test_a_path_outside_the_upload_folder_is_refused_and_left_alone(app_url, png):
    """A hand-made request naming a server file is refused by Gradio; the file is neither read nor deleted."""
    import httpx

    film = {"path": str(png), "meta": {"_type": "gradio.FileData"}}
    payload = {"data": [film, "", ["pneumothorax"], "", "zero-shot", "gradcam", 0, 0]}
    with httpx.Client(base_url=app_url, timeout=60) as http:
        event = http.post("/gradio_api/call/analyze", json=payload).json()["event_id"]
        stream = http.get(f"/gradio_api/call/analyze/{event}").text
    assert "event: error" in stream
    assert png.is_file()


def test_options_reach_the_pipeline(client, png):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    data, _ = client.predict(handle_file(png), "", maps=0, threshold=0.9, api_name="/analyze")
    assert {f["threshold"] for f in data["findings"]} == {0.9}
    assert not any(f["flagged"] for f in data["findings"])
    assert not any(f["regions"] for f in data["findings"])
    with pytest.raises(AppError, match="attribution_method must be one of"):
        client.predict(handle_file(png), "", attribution_method="magic", api_name="/analyze")


def test_every_attribution_method_is_offered_and_options_are_converted():
    from meddx.app.handlers import AnalyzeRequest
    from meddx.app.workflow import method_choices
    from meddx.explain.maps import METHODS

    assert [value for _, value in method_choices(3)] == list(METHODS)
    request = AnalyzeRequest(
        None, scoring_mode="both", attribution_method="occlusion", maps="2", threshold=0.3
    )
    assert request.options() == {"mode": "both", "method": "occlusion", "top_k": 2, "threshold": 0.3}
    assert AnalyzeRequest(None, maps=1, threshold=0).options()["threshold"] is None
    with pytest.raises(InputError, match="whole number"):
        AnalyzeRequest(None, maps="two").options()


def test_the_api_outputs_are_named(client):
    returns = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/analyze"][
        "returns"
    ]
    assert [r["label"] for r in returns] == ["Result", "Report (Markdown)"]  # report_markdown, not value_25


# --- the page's parts, without a server ------------------------------------------------------------------


def test_the_method_menu_states_measured_costs_per_analysis():
    from meddx.app.workflow import method_choices
    from meddx.explain.cost import COSTS, describe
    from meddx.explain.methods import METHOD_CARDS

    note = {key: card.menu_note for key, card in METHOD_CARDS.items()}  # whether it passed the test
    COSTS.clear()
    try:
        labels = {v: k for k, v in method_choices(3)}
        assert labels["occlusion"] == f"Occlusion (cost not measured yet; {note['occlusion']})"
        COSTS.set_units({"occlusion": 20.0, "integrated_gradients": 40.0})
        COSTS.record("gradcam", 0.6, 3)  # three Grad-CAM maps in 0.6 s
        labels = {v: k for k, v in method_choices(3)}
        assert (
            labels["occlusion"]
            == f"Occlusion (about 60 s for 3 maps, estimated at start; {note['occlusion']})"
        )
        assert labels["integrated_gradients"] == (
            "Integrated Gradients (about 2 min for 3 maps, estimated at start; "
            f"{note['integrated_gradients']})"
        )
        assert labels["gradcam"] == f"Grad-CAM (about a second for 3 maps, measured here; {note['gradcam']})"
        assert "failed" in note["gradcam"]  # Grad-CAM stays offered, labelled as failing the test
        COSTS.record("occlusion", 30.0, 1)  # a real map replaces the estimate
        assert {v: k for k, v in method_choices(1)}["occlusion"].startswith(
            "Occlusion (about 30 s for 1 map, measured here; "
        )
        assert {v: k for k, v in method_choices(0)}["occlusion"].startswith("Occlusion (no maps; ")
        assert describe(0.4) == "about a second" and describe(3600) == "about 60 min"
    finally:
        COSTS.clear()


def test_warm_up_measures_the_slow_methods_on_the_loaded_model(tiny_settings):
    from meddx.explain.cost import COSTS
    from meddx.explain.methods import DEFAULT_METHOD
    from meddx.pipeline import warm_up

    COSTS.clear()
    try:
        warm_up(tiny_settings)
        for method in ("integrated_gradients", "gradient_shap", "occlusion", "legrad", "rollout"):
            estimate = COSTS.estimate(method)
            assert estimate is not None and estimate.seconds_per_map > 0, method
        assert COSTS.estimate(DEFAULT_METHOD).measured  # warm-up draws one real map with the default
    finally:
        COSTS.clear()


def test_slow_method_units_are_measured_once_per_model_threads_and_machine(tmp_path):
    from meddx.explain.cost import cached_units

    calls = []

    def measure():
        calls.append(1)
        return {"occlusion": 20.0 + len(calls), "integrated_gradients": 40.0}

    first = cached_units(measure, model="abc", threads=2, cache_dir=tmp_path)
    assert cached_units(measure, model="abc", threads=2, cache_dir=tmp_path) == first and len(calls) == 1
    assert cached_units(measure, model="abc", threads=1, cache_dir=tmp_path)["occlusion"] == 22.0
    assert cached_units(measure, model="other", threads=2, cache_dir=tmp_path)["occlusion"] == 23.0
    for path in (tmp_path / "costs").iterdir():  # a damaged file is measured again, not trusted
        path.write_text("{not json")
    assert cached_units(measure, model="abc", threads=2, cache_dir=tmp_path)["occlusion"] == 24.0
    assert cached_units(measure, model="abc", threads=2, cache_dir=None)["occlusion"] == 25.0


def test_a_session_film_is_forgotten_after_its_time_to_live_and_when_dropped(monkeypatch):
    from meddx.app import session
    from meddx.app.session import SessionFilm, SessionFilms

    clock = [0.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    films = SessionFilms(ttl_s=60, max_sessions=2)
    film = SessionFilm(study=None, name="a.png", received="10:00:00 UTC")  # type: ignore[arg-type]
    films.put("one", film)
    clock[0] = 50
    assert films.get("one") is film  # used: its time to live starts again
    clock[0] = 100
    assert films.get("one") is film
    clock[0] = 161
    assert films.get("one") is None and len(films) == 0
    films.put("one", film)
    films.put("two", film)
    films.put("three", film)  # at most two: the least recently used goes
    assert films.get("one") is None and films.get("three") is film
    films.drop("three")
    assert films.get("three") is None


def test_examples_come_from_a_folder_and_nothing_breaks_without_them(tmp_path, monkeypatch):
    from meddx.app.examples import find_examples
    from meddx.config import Settings

    write_png(tmp_path / "b.png")
    write_png(tmp_path / "a.png")
    (tmp_path / "readme.txt").write_text("not a film")
    assert list(find_examples(str(tmp_path))) == ["a.png", "b.png"]
    assert find_examples(None) == {}
    assert find_examples(str(tmp_path / "missing")) == {}
    assert find_examples("hf-dataset:nobody/no-such-films") == {}  # offline in tests: no examples, no error
    monkeypatch.setenv("MEDDX_EXAMPLES", str(tmp_path))
    assert Settings.from_env().examples == str(tmp_path)


def test_the_findings_table_puts_image_first_with_the_notes_change_and_escapes_labels(tiny_settings, png):
    from meddx.app import views
    from meddx.pipeline import analyze

    analysis = analyze(
        png,
        "Productive cough and fever. Smoker.",
        labels=["pneumonia", "effusion", "<b>odd</b> shadow"],
        settings=tiny_settings,
        top_k=2,
    )
    table = views.findings_html(analysis)
    assert "<b>odd</b>" not in table and "&lt;b&gt;odd&lt;/b&gt;" in table
    pneumonia = next(f for f in analysis.findings if f.id == "pneumonia")
    assert pneumonia.evidence and "the odds about" in table and "Fever" in table
    assert "log-odds" not in table, "log-odds stay in the JSON"
    assert "scores are uncalibrated model outputs" in table and "⚑ flagged" not in table
    assert not re.search(r"\d %", table), "an uncalibrated score is never shown as a percentage"
    assert "uncalibrated model scores from 0 to 1" in table
    assert views.download_name(analysis, "html") == f"meddx-{analysis.reference}.html"
    order = [f.id for f in views.image_first(analysis)]
    assert [f.image_probability for f in views.image_first(analysis)] == sorted(
        (f.image_probability for f in analysis.findings), reverse=True
    )
    # Maps follow the image-only ranking, not the notes.
    assert list(analysis.explanation.mapped) == [fid for fid in order if fid != "no_finding"][:2]
    gallery = views.map_gallery(analysis)
    assert len(gallery) == 2
    for (image, caption), fid in zip(gallery, analysis.explanation.mapped, strict=True):
        assert image.ndim == 3 and image.dtype.name == "uint8"
        label = next(f.label for f in analysis.findings if f.id == fid)
        assert caption.startswith(f"Attribution map (Grad-CAM) of {label}, image-only score ")
        assert "box 1:" in caption or "no region stood out" in caption
        assert image.shape[0] > analysis.preview.shape[0], "the figure has its title band and key"
    notes = views.highlighted_notes("No fever.", [(3, 8, "absent")])
    assert notes["entities"][0]["entity"] == "− absent"  # a sign and a word, not only a colour


def test_the_page_imports_none_of_the_model_stack():
    """So that ``app.py`` serves the page in seconds while the model loads (`meddx.app.loading`)."""
    import subprocess
    import sys

    heavy = ("torch", "captum", "open_clip", "timm", "transformers", "onnxruntime")
    code = f"import sys, meddx.app; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_fhir_endpoint_returns_an_r4_bundle_naming_only_the_study(client, tmp_path, gradio_tmp):
    from fhir.resources.R4B.bundle import Bundle
    from gradio_client import handle_file
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    path = write_dicom(tmp_path / "film.dcm")
    ds = dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)

    answer = client.predict(handle_file(path), "", api_name="/fhir")

    bundle = Bundle.model_validate(answer)
    report = bundle.entry[0].resource
    assert report.status == "preliminary" and "not a diagnosis" in report.conclusion
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{ds.StudyInstanceUID}"
    assert len(bundle.entry) > 1 and all(e.resource.status == "preliminary" for e in bundle.entry)
    text = json.dumps(answer)
    for value in [*PLANTED_IDENTIFIERS.values(), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]:
        assert value not in text
    assert files_under(gradio_tmp) == [] or all(p.suffix != ".dcm" for p in files_under(gradio_tmp))
