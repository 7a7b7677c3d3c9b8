"""Uploads: deleted after the last request using them, never outside Gradio's upload folder, folders swept.

These tests replay, step by step, what Gradio does with an upload (a temporary file in the upload folder,
renamed into ``<content hash>/<name>``) around what `meddx.app.uploads` does, including the race seen in CI.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from meddx.app.uploads import (
    EMPTY_FOLDER_AGE_S,
    STRAY_FILE_AGE_S,
    UploadsInUse,
    delete_upload,
    sweep_upload_folder,
)


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def receive(root: Path, content: bytes, name: str = "film.png") -> Path:
    """Gradio's upload route: stream into ``tmp...``, make the content's folder, rename the file into it."""
    temporary = root / f"tmp{os.urandom(4).hex()}"
    temporary.write_bytes(content)
    folder = root / content.hex()[:16]
    folder.mkdir(exist_ok=True)
    os.rename(temporary, folder / name)
    return folder / name


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_files_outside_the_upload_folder_are_never_deleted(root, tmp_path):
    outside = tmp_path / "cxr.png"
    outside.write_bytes(b"film")
    delete_upload(outside, root)
    assert outside.is_file()
    upload = receive(root, b"film")
    delete_upload(upload, root)
    assert not upload.exists()


def test_the_last_request_holding_a_shared_upload_deletes_it(root):
    uploads = UploadsInUse(root, sweep_every_s=None)
    upload = receive(root, b"same film")
    with uploads.hold(upload):
        with uploads.hold(upload):
            assert upload.is_file()
        assert upload.is_file(), "deleted while another request still read it"
    assert not upload.exists()


def test_an_upload_sent_again_meanwhile_is_left_to_the_request_that_sent_it(root):
    uploads = UploadsInUse(root, sweep_every_s=None)
    upload = receive(root, b"same film")
    with uploads.hold(upload):
        upload.unlink()
        receive(root, b"same film")  # a new request uploaded the same film: a new file at the same path
    assert upload.is_file()
    with uploads.hold(upload):
        pass
    assert not upload.exists()


def test_an_identical_upload_arriving_while_the_last_holder_finishes_is_not_lost(root):
    """In CI: Gradio had made the content's folder, the finishing request removed it, the rename failed."""
    uploads = UploadsInUse(root, sweep_every_s=None)
    upload = receive(root, b"same film")
    with uploads.hold(upload):
        temporary = root / "tmpsecond"
        temporary.write_bytes(b"same film")
        upload.parent.mkdir(exist_ok=True)  # the second upload finds the folder ...
    os.rename(temporary, upload)  # ... and renames its file into it after the first request finished
    assert upload.read_bytes() == b"same film"
    assert sorted(p.name for p in root.rglob("*")) == [upload.parent.name, upload.name]


def test_the_sweep_removes_old_empty_folders_and_stale_temporary_files_only(root):
    emptied_long_ago, emptied_just_now, in_use = (receive(root, bytes([n]) * 4).parent for n in range(3))
    for folder in (emptied_long_ago, emptied_just_now):
        (folder / "film.png").unlink()
    for folder in (emptied_long_ago, in_use):
        age(folder, EMPTY_FOLDER_AGE_S + 1)
    failed_upload, upload_in_progress = root / "tmpfailed", root / "tmpstreaming"
    not_ours = root / "notes.txt"
    for path in (failed_upload, upload_in_progress, not_ours):
        path.write_bytes(b"x")
    for path in (failed_upload, not_ours):
        age(path, STRAY_FILE_AGE_S + 1)

    sweep_upload_folder(root)

    assert not emptied_long_ago.exists()
    assert emptied_just_now.is_dir()
    assert (in_use / "film.png").is_file()
    assert not failed_upload.exists()
    assert upload_in_progress.is_file()
    assert not_ours.is_file()


def test_the_sweeper_removes_the_last_requests_folder_in_the_background(root):
    uploads = UploadsInUse(root, sweep_every_s=0.05, empty_folder_age_s=0.3)
    upload = receive(root, b"film")
    with uploads.hold(upload):
        pass
    assert upload.parent.is_dir(), "removed at once: an identical upload arriving now would fail"
    deadline = time.monotonic() + 10
    while upload.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    uploads.close()
    assert list(root.iterdir()) == []
