"""The typed API, ownership of uploads, hostile film paths and the cache sweep, surrogates (issue 19).

Every case goes through the live app (``gradio_client``, raw HTTP, the page's own event, MCP where it
applies) and gets one sentence that names the argument, within a bounded time, leaving nothing on disk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import corpus as c
from tests.helpers import files_under, page_analyze, running_app, write_png

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SURROGATE_NOTES = "Cough and fever \ud83d for 3 days; no pleural effusion \udcff."
"""Lone surrogates (a split emoji; an undecodable byte as Python's surrogateescape keeps it)."""
TIME_LIMIT_S = 20
"""Each refusal comes back within this (the label cases used to take 4-19 s of model work)."""

# fmt: off
TYPE_CASES = [
    # name                   /analyze keyword arguments                       phrase of the message
    ("notes_number",         {"notes": 123},                                  "notes must be text"),
    ("notes_list",           {"notes": ["cough"]},                            "notes must be text"),
    ("custom_number",        {"custom_findings": 5},                          "custom_findings must be text"),
    ("findings_string",      {"findings": "effusion"},                        "findings must be a list"),
    ("findings_numbers",     {"findings": [1, 2]},                            "list of strings"),
    ("method_list",          {"attribution_method": ["gradcam"]},             "attribution_method must be"),
    ("method_unknown",       {"attribution_method": "magic"},                 "attribution_method must be"),
    ("mode_number",          {"scoring_mode": 3},                             "scoring_mode must be one of"),
    ("maps_fraction",        {"maps": 2.5},                                   "maps must be a whole number"),
    ("maps_text",            {"maps": "three"},                               "maps must be a whole number"),
    ("maps_bool",            {"maps": True},                                  "maps must be a whole number"),
    ("threshold_text",       {"threshold": "high"},                           "threshold must be a number"),
    ("threshold_range",      {"threshold": 2},                                "threshold must be a number"),
    ("findings_10000",       {"findings": [f"x{i}" for i in range(10_000)]},  "Too many findings (10000)"),
    ("custom_50000",         {"custom_findings": ",".join(f"x{i}" for i in range(50_000))},
                                                                              "custom_findings is too long"),
    ("custom_100",           {"findings": [], "custom_findings": ",".join(f"label {i}" for i in range(100))},
                                                                              "Too many findings (100)"),
]
# fmt: on


def check_sentence(message: str, phrase: str) -> None:
    assert phrase in message, message
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert not re.search(r"\b[A-Z]\w*(?:Error|Exception)\b", message), message


@pytest.fixture
def png(tmp_path) -> Path:
    return write_png(tmp_path / "cxr.png")


@pytest.mark.parametrize(("name", "options", "phrase"), TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_every_argument_is_checked_and_named(name, options, phrase, client, png, gradio_tmp):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    start = time.perf_counter()
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(png), api_name="/analyze", **options)
    assert time.perf_counter() - start < TIME_LIMIT_S
    check_sentence(str(raised.value), phrase)
    assert files_under(gradio_tmp) == [], "the upload was left behind"


@pytest.mark.parametrize("notes", [123, ["no pneumothorax"], {"text": "x"}], ids=["number", "list", "object"])
def test_notes_endpoint_refuses_what_is_not_text(notes, client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as raised:
        client.predict(notes, api_name="/notes")
    check_sentence(str(raised.value), "notes must be text")


JSON = {"content-type": "application/json"}


def raw_call(app_url: str, data: list, endpoint: str = "analyze") -> str:
    """``POST /gradio_api/call/<endpoint>``, the body as a browser's JSON.stringify writes it (lone surrogates
    escaped), then the event stream's text."""
    with httpx.Client(base_url=app_url, timeout=120) as http:
        body = json.dumps({"data": data})
        event = http.post(f"gradio_api/call/{endpoint}", content=body, headers=JSON).json()["event_id"]
        return http.get(f"gradio_api/call/{endpoint}/{event}").text


def test_infinity_sent_as_raw_json_is_refused_by_name(app_url, png, gradio_tmp):
    """``maps=Infinity`` (JSON that httpx will not write, but Python's json reads) through raw HTTP."""
    with httpx.Client(base_url=app_url, timeout=120) as http:
        film = upload(http, png)
        for name, value in (("maps", "Infinity"), ("threshold", "NaN")):
            data = [film, "", None, "", "zero-shot", "gradcam", 3, 0]
            text = json.dumps({"data": data}).replace(
                ", 3, 0]", ", Infinity, 0]" if name == "maps" else ", 3, NaN]"
            )
            assert value in text
            answer = http.post(
                "gradio_api/call/analyze", content=text, headers={"content-type": "application/json"}
            )
            stream = http.get(f"gradio_api/call/analyze/{answer.json()['event_id']}").text
            assert "event: error" in stream and f"{name} must be" in stream, stream[:300]
            film = upload(http, png)
    Path(film["path"]).unlink()


def upload(http: httpx.Client, path: Path) -> dict:
    uploaded = http.post("gradio_api/upload", files={"files": (path.name, path.read_bytes())}).json()[0]
    return {"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def hostile_films(root: Path) -> dict[str, object]:
    file_data = {"meta": {"_type": "gradio.FileData"}}
    (root / "a-folder").mkdir(exist_ok=True)
    return {
        "upload_folder": {"path": str(root), **file_data},
        "upload_folder_slash": {"path": str(root) + "/", **file_data},
        "a_folder_in_it": {"path": str(root / "a-folder"), **file_data},
        "dot_dot": {"path": str(root / "a-folder" / ".."), **file_data},
        "plain_string": "film.png",
        "path_number": {"path": 5, **file_data},
        "no_path": {"meta": {"_type": "gradio.FileData"}},
    }


def test_hostile_film_values_get_a_sentence_and_the_cache_sweep_survives(tiny_settings, tmp_path, capfd):
    """The upload folder itself (and other non-files) as the film: a sentence each, nothing printed. Then,
    in an app sweeping every second, an unused upload is still deleted (the sweep did not die), and the
    app shuts down cleanly with nothing left."""
    from meddx.app import views

    gradio_tmp = tmp_path / "gradio"
    gradio_tmp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(views, "CACHE_SWEEP", (1, 1))
        with running_app(tiny_settings, gradio_tmp) as url:
            for name, film in hostile_films(gradio_tmp).items():
                stream = raw_call(url, [film, "Zebulon says cough"])
                assert "event: error" in stream, (name, stream[:300])
                assert re.search(r"film must be|Upload a chest X-ray first|could not be read", stream), (
                    name,
                    stream,
                )
                assert "Zebulon" not in stream
            time.sleep(2.5)  # at least one sweep with the folders in Gradio's temp-file set
            with httpx.Client(base_url=url, timeout=60) as http:
                unused = upload(http, write_png(tmp_path / "unused.png"))
            assert Path(unused["path"]).is_file()
            deadline = time.time() + 15
            while Path(unused["path"]).exists() and time.time() < deadline:
                time.sleep(0.5)
            assert not Path(unused["path"]).exists(), "the cache sweep no longer runs"
            assert gradio_tmp.is_dir() and (gradio_tmp / "a-folder").is_dir(), "a folder was deleted"
            (gradio_tmp / "a-folder").rmdir()
            with httpx.Client(base_url=url, timeout=60) as http:
                upload(http, write_png(tmp_path / "left.png"))  # never analysed: gone at shutdown
    out, err = capfd.readouterr()
    assert "shutdown failed" not in (out + err).lower()
    assert "Received inputs" not in out + err and "Zebulon" not in out + err
    assert files_under(gradio_tmp) == []


def test_an_upload_can_be_named_only_by_the_request_that_uploaded_it(app_url, client, png, gradio_tmp):
    """The upload's path carries a random token: the content-hash path another client could compute names
    nothing, so it can neither analyse nor delete the owner's upload."""
    import hashlib

    with httpx.Client(base_url=app_url, timeout=60) as http:
        mine = upload(http, png)
    folder = Path(mine["path"]).parent
    assert re.fullmatch(r"[0-9a-f]{64}-[0-9a-f]{32}", folder.name), folder.name
    digest = hashlib.sha256(png.read_bytes()).hexdigest()
    guessed = {"path": str(gradio_tmp / digest / png.name), "meta": {"_type": "gradio.FileData"}}
    stream = raw_call(app_url, [guessed, ""])
    assert "event: error" in stream
    assert Path(mine["path"]).is_file(), "another request deleted the owner's upload"
    stream = raw_call(app_url, [mine, "cough"])
    assert "event: complete" in stream, stream[:300]
    assert not Path(mine["path"]).exists()


def test_identical_uploads_get_their_own_paths(app_url, png):
    with httpx.Client(base_url=app_url, timeout=60) as http:
        first, second = upload(http, png), upload(http, png)
    assert first["path"] != second["path"]
    assert Path(first["path"]).read_bytes() == Path(second["path"]).read_bytes() == png.read_bytes()
    for film in (first, second):
        assert "event: complete" in raw_call(app_url, [film, ""])


def test_lone_surrogates_in_notes_are_handled_on_every_surface(app_url, png, tiny_model_dir, gradio_tmp):
    """The page's Analyze button, /analyze and /notes over HTTP (as JSON escapes: a browser's JSON.stringify
    writes them so; gradio_client cannot send them at all), and the CLI: each reads the notes (the
    surrogates become U+FFFD) instead of failing without a message."""
    message = page_analyze(app_url, png, SURROGATE_NOTES, maps=1)
    assert message["success"], message
    assert "\ufffd" in json.dumps(message, ensure_ascii=False)
    for served in files_under(gradio_tmp):  # what Gradio serves back, as delete_cache would do later
        served.unlink()

    with httpx.Client(base_url=app_url, timeout=120) as http:
        film = upload(http, png)
    stream = raw_call(app_url, [film, SURROGATE_NOTES])
    assert "event: complete" in stream and '"cough"' in stream, stream[:300]
    stream = raw_call(app_url, [SURROGATE_NOTES], endpoint="notes")
    assert "event: complete" in stream and '"fever"' in stream, stream[:300]

    env = dict(os.environ, MEDDX_MODEL=f"local-dir:{tiny_model_dir}", MEDDX_THREADS="1", PYTHONPATH=str(ROOT))
    cli_notes = "Cough and fever \udcff for 3 days"  # argv carries it as the byte 0xff
    for args in (["notes", cli_notes, "--json"], ["analyze", str(png), "--notes", cli_notes, "--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "meddx", *args], capture_output=True, env=env, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert b"Traceback" not in result.stderr
        assert b"cough" in result.stdout.lower()


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (c.dicom_deflate_bomb, "expands to more than 256 MB"),
        (c.dicom_million_items, "more than 10,000 DICOM sequence items"),
        (c.tiff_many_pages(), "more than 1,000 pages"),
        (c.random_bytes(5), "is not an image"),
    ],
    ids=["deflate_bomb", "million_items", "tiff_100k_pages", "bidi_name"],
)
def test_bounded_work_cases_through_the_page_event(make, phrase, app_url, gradio_tmp, tmp_path):
    """The page's own Analyze event gets the reader's sentence, in bounded time, and keeps nothing."""
    path = tmp_path / (c.BIDI_NAME if phrase == "is not an image" else "film.dcm")
    path.write_bytes(make())
    before = set(files_under(gradio_tmp))
    start = time.perf_counter()
    message = page_analyze(app_url, path, "Zebulon coughs", maps=1)
    assert time.perf_counter() - start < 60
    text = json.dumps(message, ensure_ascii=False)
    assert "meddx-alert" in text, "the page's status line did not get the sentence"
    assert phrase in text, text[:400]
    assert "\u202e" not in text and "Zebulon" not in text
    assert set(files_under(gradio_tmp)) <= before, "the upload was left behind"


def mcp_call(app_url: str, tool: str, arguments: dict) -> dict:
    """One MCP ``tools/call`` over the streamable HTTP transport, raw JSON-RPC; the call's answer."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(base_url=app_url, timeout=120, headers=headers) as http:

        def rpc(method: str, params: dict, ident: int | None) -> dict | None:
            body = {"jsonrpc": "2.0", "method": method, "params": params}
            if ident is not None:
                body["id"] = ident
            response = http.post("gradio_api/mcp/", content=json.dumps(body))
            response.raise_for_status()
            if "mcp-session-id" in response.headers:
                http.headers["mcp-session-id"] = response.headers["mcp-session-id"]
            for line in response.text.splitlines():
                if line.startswith("data:") and json.loads(line[5:]).get("id") == ident:
                    return json.loads(line[5:])
            return None

        client = {"name": "meddx-tests", "version": "1"}
        rpc("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": client}, 1)
        rpc("notifications/initialized", {}, None)
        answer = rpc("tools/call", {"name": tool, "arguments": arguments}, 2)
        assert answer is not None
        return answer


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        ({"findings": "effusion"}, "is not of type 'array'"),  # the MCP layer's own schema check
        ({"maps": 99}, "maps must be a whole number"),
        ({"notes": SURROGATE_NOTES}, r"\"name\": \"cough\""),  # the result as JSON text
    ],
    ids=["findings_string", "maps_range", "surrogates"],
)
def test_mcp_arguments_are_checked_and_named(arguments, phrase, app_url, png, gradio_tmp):
    import base64

    film = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    answer = mcp_call(app_url, "analyze_film", {"film": film, **arguments})
    assert phrase in json.dumps(answer), json.dumps(answer)[:400]
    assert files_under(gradio_tmp) == [], "the MCP layer's copy or the upload was left"
