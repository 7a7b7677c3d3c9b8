"""The real app, launched in-process on a free port with the tiny model, called through `gradio_client`."""

from __future__ import annotations

import json
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
    assert set(endpoints) == {"/analyze", "/notes"}
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
    from meddx.app.page import METHOD_COST
    from meddx.explain.maps import METHODS

    assert list(METHOD_COST) == ["gradcam", "gradient_shap", "integrated_gradients", "occlusion"]
    assert set(METHOD_COST) == set(METHODS)
    request = AnalyzeRequest(
        None, scoring_mode="both", attribution_method="occlusion", maps="2", threshold=0.3
    )
    assert request.options() == {"mode": "both", "method": "occlusion", "top_k": 2, "threshold": 0.3}
    assert AnalyzeRequest(None, maps=1, threshold=0).options()["threshold"] is None
    with pytest.raises(InputError, match="whole number"):
        AnalyzeRequest(None, maps="two").options()
