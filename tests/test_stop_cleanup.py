"""Stopping the app leaves nothing on disk: ``python app.py`` in a subprocess, a `gradio_client` connected
(its heartbeat stream open, as a browser tab keeps one), a page analysis served (the film, its maps and
preview, the HTML and JSON reports in Gradio's cache) and an upload never analysed; then SIGINT or SIGTERM.
Every file the app wrote must be gone when the process has exited, and the exit must be clean (status 0, no
native abort). After a hard kill (SIGKILL: nothing can run) the files stay, and the next start must sweep them
before it serves.

Gradio's folder and TMPDIR are empty temp folders of the test's own, so anything left in them is the app's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import api_client, files_under, free_port, page_analyze, write_png

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OURS = re.compile(r"[0-9a-f]{40,64}(-[0-9a-f]{32})?|meddx-.*|pymp-.*")
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60


class App:
    """``python app.py`` on a free port, with Gradio's folder and TMPDIR under ``folder``."""

    def __init__(self, folder: Path, model_dir: Path) -> None:
        self.gradio, self.tmp = folder / "gradio", folder / "tmp"
        self.gradio.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"app-{uuid.uuid4().hex[:6]}.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MEDDX_THREADS="1",
            GRADIO_TEMP_DIR=str(self.gradio),
            TMPDIR=str(self.tmp),
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(port), "--model", f"local-dir:{model_dir}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(self.url + "config", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.process.kill()
        raise AssertionError(f"the app did not serve within {START_TIMEOUT_S} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int) -> int:
        """Send ``signum`` and wait for the process to exit; its exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the app did not stop within {STOP_TIMEOUT_S} s: {self.output()}") from None

    def left(self, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """What is left in Gradio's folder and in TMPDIR (relative paths): every file, and every folder a
        meddx app or its fork server makes (content-named, ``meddx-*``, ``pymp-*``) even when empty.

        Empty folders that libraries make at start are no data and are not listed (Gradio's
        ``vibe_edit_history``, torch's ``torchinductor_<user>``); nor are the names in ``ignore``.
        """
        found = []
        for name, root in (("gradio", self.gradio), ("tmp", self.tmp)):
            for path in root.rglob("*"):
                relative = str(path.relative_to(root))
                if relative.split("/")[0].startswith(ignore):
                    continue
                ours = path.is_dir() and OURS.fullmatch(path.name)
                if path.is_file() or path.is_socket() or ours:
                    found.append(f"{name}/{relative}")
        return sorted(found)


def use(app: App, film: Path) -> object:
    """A connected client, a served page analysis and an upload never analysed; the client (keep it alive)."""
    client = api_client(app.url)
    assert client.heartbeat.is_alive(), "the client must hold its heartbeat stream open"
    message = page_analyze(app.url, film, "cough", timeout=180)
    assert message["success"], message
    httpx.post(app.url + "gradio_api/upload", files={"files": ("later.png", film.read_bytes())}, timeout=60)
    names = {p.suffix for p in files_under(app.gradio)}
    assert {".html", ".json", ".png"} <= names, app.left()  # served reports and images, and the upload
    return client


def check_stopped_clean(app: App, status: int, *, ignore: tuple[str, ...] = ()) -> None:
    """Exit status 0, no traceback and no abort, nothing left."""
    output = app.output()
    assert "Traceback" not in output and "terminate called" not in output, output
    assert status == 0, output
    assert app.left(ignore=ignore) == [], app.left()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_with_a_client_connected_leaves_nothing(signum, tiny_model_dir, tmp_path):
    film = write_png(tmp_path / "film.png")
    app = App(tmp_path / "run", tiny_model_dir)
    client = use(app, film)

    status = app.stop(signum)

    check_stopped_clean(app, status)
    client.close()


def test_what_a_hard_kill_leaves_is_swept_by_the_next_start(tiny_model_dir, tmp_path):
    film = write_png(tmp_path / "film.png")
    first = App(tmp_path / "run", tiny_model_dir)
    client = use(first, film)
    first.stop(signal.SIGKILL)
    client.close()
    assert files_under(first.gradio), "a hard kill leaves the served files (nothing can run)"

    second = App(tmp_path / "run", tiny_model_dir)

    # Swept before serving. multiprocessing's own folder of the killed app (its fork server's socket, no
    # data) is the standard library's, in a temp folder other programs share: it is not meddx's to sweep.
    assert second.left(ignore=("pymp-",)) == [], second.left()
    client = use(second, film)
    check_stopped_clean(second, second.stop(signal.SIGTERM), ignore=("pymp-",))
    client.close()
