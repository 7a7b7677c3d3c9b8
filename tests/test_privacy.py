"""Privacy: nothing of an upload stays on disk, and no log, output or message carries notes or identifiers.

The film is a DICOM file with identifiers planted in it (`tests.dicom_factory.PLANTED_IDENTIFIERS`), the
notes carry a made-up name no rule could mistake for a clinical concept. Requests go through the real
app (in-process, Gradio's files in a temp folder) with `gradio_client`, through the page's own event the
way the browser sends it, and through the CLI. Every log record at DEBUG (a root handler and ``caplog``),
everything written to stdout and stderr (``capfd``; the CLI's streams), every output and every file left
in Gradio's folder is searched.

What Gradio keeps by design: the page's event returns images (the film, its map masks and the preview) and
the two downloads (``meddx-*.html``, ``meddx-*.json``), which Gradio copies into its cache to serve them;
`meddx.app.page` has them swept by ``delete_cache`` 15-20 minutes later. The ``/analyze`` and ``/notes``
endpoints return JSON and Markdown only, so after them nothing at all is left.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.corpus import dicom_truncated
from tests.helpers import PLANTED_IDENTIFIERS, files_under, page_analyze, write_dicom

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTE_MARKER = "Zebulon-Quaxley-7731"
NOTES = f"{NOTE_MARKER} reports haemoptysis and fever for 3 days; no pleural effusion."
SECRETS = [NOTE_MARKER, "Zebulon", "Quaxley", *PLANTED_IDENTIFIERS.values()]
"""Strings no log, output or message may contain."""
PIXEL_DUMP = re.compile(r"data:image|[A-Za-z0-9+/]{120,}|(?:\\x[0-9a-f]{2}){16,}")
"""What pixel data in a log would look like: a data URI, a long base64 run, escaped bytes."""


def assert_clean(text: str, where: str) -> None:
    """No note text and no identifier in ``text``."""
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} found in {where}"


def assert_clean_log(text: str, where: str) -> None:
    """No note text, no identifier and no pixel dump in a log or stream."""
    assert_clean(text, where)
    dump = PIXEL_DUMP.search(text)
    assert dump is None, f"pixel data in {where}: {dump.group()[:80] if dump else ''}"


@pytest.fixture
def film(tmp_path) -> Path:
    return write_dicom(tmp_path / "study.dcm")


CAPTURE_MARKER = "meddx-capture-works"
NOTE_SPAN = "haemoptysis"
"""A concept read from the notes: in every response, in no log."""


@pytest.fixture
def logs(caplog):
    """Every log record at DEBUG and above, from every thread: caplog plus a formatting root handler, with the
    root logger itself at DEBUG (what an operator turning on debugging would do)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(threadName)s %(message)s"))
    caplog.set_level(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    logging.getLogger("meddx.tests").debug(CAPTURE_MARKER)  # proves the capture works
    try:
        yield lambda: stream.getvalue() + caplog.text
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_api_requests_leave_no_file_and_no_trace(client, film, tmp_path, gradio_tmp, logs, capfd):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    data, markdown = client.predict(handle_file(film), NOTES, api_name="/analyze")
    assert files_under(gradio_tmp) == []
    assert data["notes"]["concepts"], "the notes were read"
    assert_clean(json.dumps(data) + markdown, "the /analyze result")

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dicom_truncated())
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(broken), NOTES, api_name="/analyze")
    assert files_under(gradio_tmp) == []
    assert_clean(str(raised.value), "the error message")

    concepts = client.predict(NOTES, api_name="/notes")
    assert any(c["name"] == "haemoptysis" for c in concepts["concepts"])
    assert files_under(gradio_tmp) == []

    captured = logs()
    assert CAPTURE_MARKER in captured, "the log capture saw nothing"
    out, err = capfd.readouterr()
    assert_clean_log(captured, "the logs")
    assert_clean_log(out + err, "stdout/stderr")


def test_the_page_event_leaves_only_what_gradio_serves(app_url, film, gradio_tmp, logs, capfd):
    before = set(Path(tempfile.gettempdir()).glob("meddx-request-*"))

    message = page_analyze(app_url, film, NOTES)

    assert message["success"], message
    left = files_under(gradio_tmp)
    names = sorted(p.name for p in left)
    downloads = [n for n in names if n.startswith("meddx-")]
    assert [Path(n).suffix for n in downloads] == [".html", ".json"]
    assert set(names) - set(downloads) == {"image.png"}, names  # the film, its map masks, the preview
    upload = film.read_bytes()
    assert all(p.read_bytes() != upload and p.suffix != ".dcm" for p in left), "the upload was kept"
    for path in left:
        if path.suffix in (".html", ".json"):
            assert_clean(path.read_text(encoding="utf-8"), path.name)
    assert set(Path(tempfile.gettempdir()).glob("meddx-request-*")) == before, "a request folder was left"
    response = json.dumps(message)  # it shows the notes back to their author, highlighted: by design
    assert not any(value in response for value in PLANTED_IDENTIFIERS.values())
    out, err = capfd.readouterr()
    assert_clean_log(logs() + out + err, "the logs and streams")

    for path in left:  # what delete_cache would do; the next test starts from an empty folder
        path.unlink()


def test_a_failed_page_event_leaves_nothing(app_url, tmp_path, gradio_tmp):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dicom_truncated())
    message = page_analyze(app_url, broken, NOTES)
    # The page answers a failure in its status line (no "Error" badge on every panel), never a traceback.
    shown = json.dumps(message["output"])
    assert "meddx-alert" in shown and "Traceback" not in shown
    assert files_under(gradio_tmp) == []


def test_the_cli_logs_nothing_identifying_even_at_debug(film, tmp_path, tiny_model_dir):
    """The CLI with the root logger at DEBUG on stderr: one good film, then one damaged one, each with the
    notes (one patient's notes go with one film: `analyze` refuses them for several)."""
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dicom_truncated())
    debug_cli = "import logging, sys; logging.basicConfig(level=logging.DEBUG); from meddx.cli import main; "
    env = dict(os.environ, MEDDX_MODEL=f"local-dir:{tiny_model_dir}", MEDDX_THREADS="1", PYTHONPATH=str(ROOT))
    results = [
        subprocess.run(
            [
                sys.executable,
                "-c",
                debug_cli + "sys.exit(main())",
                "analyze",
                str(path),
                "--json",
                "--notes",
                NOTES,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        for path in (film, broken)
    ]
    assert [r.returncode for r in results] == [0, 2]
    assert "DEBUG:" in results[0].stderr and "loading model" in results[0].stderr, (
        "the DEBUG capture saw nothing"
    )
    for result in results:
        assert_clean_log(result.stderr, "the CLI's stderr")
        assert_clean(result.stdout, "the CLI's JSON")
    assert json.loads(results[0].stdout)["findings"], "the good film was analysed"


def test_reports_in_every_format_carry_no_identifier(film, tiny_settings):
    from meddx.pipeline import analyze
    from meddx.report.render import render_html, render_json, render_markdown

    analysis = analyze(film, NOTES, settings=tiny_settings)
    analysis.include_maps = True
    for name, text in (
        ("JSON", json.dumps(render_json(analysis))),
        ("Markdown", render_markdown(analysis)),
        ("HTML", render_html(analysis)),
    ):
        assert_clean(text, f"the {name} report")


# --- issue 19: every surface at DEBUG, the raw HTTP call with [film, notes] only, MCP with a base64 film ---


def upload(http: httpx.Client, path: Path) -> dict:
    uploaded = http.post("gradio_api/upload", files={"files": (path.name, path.read_bytes())}).json()[0]
    return {"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def call_raw(app_url: str, data: list, endpoint: str = "analyze") -> str:
    """``POST /gradio_api/call/<endpoint>`` with ``data``, then the event stream's text."""
    with httpx.Client(base_url=app_url, timeout=120) as http:
        event = http.post(f"gradio_api/call/{endpoint}", json={"data": data}).json()["event_id"]
        return http.get(f"gradio_api/call/{endpoint}/{event}").text


def test_a_raw_http_call_with_film_and_notes_only_is_analysed_and_logs_nothing(
    app_url, film, gradio_tmp, logs, capfd
):
    """The API page says only the film is required: ``[film, notes]`` is a whole request (the rest take their
    defaults), not a traceback quoting "Received inputs: [..., <the notes>]"."""
    with httpx.Client(base_url=app_url, timeout=120) as http:
        uploaded = upload(http, film)
    stream = call_raw(app_url, [uploaded, NOTES])
    assert "event: complete" in stream, stream[:300]
    assert "haemoptysis" in stream  # the notes were read
    assert files_under(gradio_tmp) == []
    out, err = capfd.readouterr()
    assert "Received inputs" not in out + err
    captured = logs()
    assert CAPTURE_MARKER in captured
    assert_clean_log(captured + out + err, "the logs and streams")
    assert NOTE_SPAN not in captured + out + err, "a span of the notes was logged"


def mcp_call(app_url: str, tool: str, arguments: dict) -> dict:
    """One MCP ``tools/call`` over the streamable HTTP transport, raw JSON-RPC; the call's result."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(base_url=app_url, timeout=120, headers=headers) as http:

        def rpc(method: str, params: dict, ident: int | None) -> dict | None:
            body = {"jsonrpc": "2.0", "method": method, "params": params}
            if ident is not None:
                body["id"] = ident
            response = http.post("gradio_api/mcp/", json=body)
            response.raise_for_status()
            if "mcp-session-id" in response.headers:
                http.headers["mcp-session-id"] = response.headers["mcp-session-id"]
            if ident is None:
                return None
            for line in response.text.splitlines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("id") == ident:
                        return message
            return response.json()

        client = {"name": "meddx-tests", "version": "1"}
        init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": client}
        rpc("initialize", init, 1)
        rpc("notifications/initialized", {}, None)
        return rpc("tools/call", {"name": tool, "arguments": arguments}, 2)


def test_mcp_with_a_base64_film_leaves_no_copy_and_logs_nothing(app_url, film, gradio_tmp, logs, capfd):
    """Gradio's MCP layer saves a base64 film in its temp folder before uploading it again; meddx deletes
    that copy when the call ends. With the root logger at DEBUG, ``sse_starlette`` and ``mcp`` log nothing."""
    import base64

    data_uri = "data:application/dicom;base64," + base64.b64encode(film.read_bytes()).decode()
    answer = mcp_call(app_url, "analyze_film", {"film": data_uri, "notes": NOTES})
    text = json.dumps(answer)
    assert "haemoptysis" in text, text[:500]
    assert_clean(text.replace(NOTE_MARKER, ""), "the MCP answer")  # the notes come back only as concepts
    assert files_under(gradio_tmp) == [], "a copy of the MCP film was left"
    result = json.loads(answer["result"]["content"][0]["text"])  # JSON, not a Python-style string
    assert result["schema_version"] >= 3 and {f["kind"] for f in result["findings"]} == {"score"}

    answer = mcp_call(app_url, "read_notes", {"notes": NOTES})
    assert NOTE_SPAN in json.dumps(answer)
    out, err = capfd.readouterr()
    captured = logs()
    assert CAPTURE_MARKER in captured
    assert_clean_log(captured + out + err, "the logs and streams")
    # Responses hold spans of the notes (the concepts read); sse_starlette logs each event in full at DEBUG
    assert NOTE_SPAN not in captured + out + err, "a span of the notes (an MCP response) was logged"
