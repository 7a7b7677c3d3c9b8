"""The start-up sweep (`meddx.app.stop`): alone on a folder, a meddx app deletes what a hard-killed one left
there, and only that; with another meddx app holding the folder (another process), it deletes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meddx.app.stop import claim_folder, sweep_gradio_folder, sweep_request_folders

fcntl = pytest.importorskip("fcntl")
CONTENT = "87b8cecbd33c86061371f5a1bdffe762392390fcfb3044c35552b80c0878078d"


def leftovers(folder: Path) -> dict[str, Path]:
    """What a killed app leaves in Gradio's folder, and what is not meddx's to delete."""
    made = {
        "served": folder / CONTENT / "image.png",
        "upload": folder / f"{CONTENT}-{'a' * 32}" / "film.dcm",
        "stray": folder / "tmpab12cd34",
        "library": folder / "vibe_edit_history" / "snapshot.py",
        "other": folder / "notes.txt",
    }
    for path in made.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return made


def test_alone_the_sweep_deletes_what_a_meddx_app_writes_and_nothing_else(tmp_path):
    made = leftovers(tmp_path)
    claim = claim_folder(tmp_path, sweep_gradio_folder)
    try:
        assert not made["served"].parent.exists() and not made["upload"].parent.exists()
        assert not made["stray"].exists()
        assert made["library"].exists() and made["other"].exists()
    finally:
        claim.close()


def test_request_folders_are_swept_from_the_temp_folder(tmp_path):
    (tmp_path / "meddx-request-abc123").mkdir()
    (tmp_path / "meddx-request-abc123" / "meddx-report.html").write_text("x")
    (tmp_path / "someone-else").mkdir()
    claim_folder(tmp_path, sweep_request_folders).close()
    assert not (tmp_path / "meddx-request-abc123").exists() and (tmp_path / "someone-else").is_dir()


def test_with_another_meddx_app_on_the_folder_nothing_is_swept(tmp_path):
    made = leftovers(tmp_path)
    holder = subprocess.Popen(  # another app: a shared lock held by another process
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        claim = claim_folder(tmp_path, sweep_gradio_folder)
        assert all(path.exists() for path in made.values())
        claim.close()
    finally:
        holder.kill()
        holder.wait()
    start = time.monotonic()
    claim_folder(tmp_path, sweep_gradio_folder).close()  # the other app is gone: its lock went with it
    assert not made["served"].exists() and time.monotonic() - start < 5


def test_a_claim_is_shared_while_the_app_runs(tmp_path):
    claim = claim_folder(tmp_path, sweep_gradio_folder)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a second app may share it
    finally:
        os.close(fd)
        claim.close()
