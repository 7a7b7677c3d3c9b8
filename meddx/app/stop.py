"""Nothing the app wrote outlives it: a stop by SIGINT or SIGTERM deletes it, a start sweeps what a hard kill
left.

While the app runs, each upload is deleted when its request ends (`meddx.app.uploads`) and Gradio's
``delete_cache`` sweeps what it served (films, maps, reports; `meddx.app.views.CACHE_SWEEP`). The rest goes
when the app stops:

- A blocking `meddx.app.guards.MeddxBlocks.launch` waits under `stop_signals`. SIGINT (Ctrl-C) and SIGTERM
  (what a Space restart, Docker or systemd sends) both end the wait, and the app then closes
  (`MeddxBlocks.close`): Gradio's full ``close`` (queue closed, heartbeat streams ended, server asked to stop,
  waiting at most 5 s for it), then, whether or not the server has finished, every file Gradio cached for
  the app, every upload and every request folder is deleted. Before this, Gradio's own wait answered SIGINT
  with the server's stop only: a connected browser tab's heartbeat stream kept the server from finishing,
  the process exited after 5 s, and the clean-up at the end of the server's lifespan never ran; SIGTERM
  killed the process outright.
- A hard kill (SIGKILL, out of memory, a power cut) runs nothing. `claim_folders`, at the next start
  (when the page is built, before Gradio writes anything), sweeps first: when no other meddx app holds the
  folder (an ``flock`` on the folder itself, which the kernel releases when its process dies, however it
  dies), what a meddx app writes there is deleted: Gradio's content-named folders and stray ``tmp*`` upload
  files in Gradio's folder, ``meddx-request-*`` folders in the temp folder. With another meddx app running
  on the same folder, nothing is swept. Gradio's folder is swept only when ``GRADIO_TEMP_DIR`` names it
  (``app.py`` sets ``<temp>/meddx-gradio`` when it is unset): treat that folder as meddx's alone.

Where ``fcntl`` does not exist (Windows), no folder is claimed and nothing is swept at start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # not on Windows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

GRADIO_FOLDER_VARIABLE = "GRADIO_TEMP_DIR"
"""Where Gradio keeps uploads and the files it serves (read by Gradio itself)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the app cleanly."""
CONTENT_FOLDER = re.compile(r"[0-9a-f]{40,64}(-[0-9a-f]{32})?")
"""Gradio names upload and cache folders by a hex digest of the content (`PrivateUploads` adds a token)."""
REQUEST_FOLDER_PREFIX = "meddx-request-"
"""The per-request folders the page's handlers write downloads into (in the temp folder)."""
STRAY_UPLOAD_PREFIX = "tmp"
"""Python's `tempfile` names, which Gradio's upload route uses while it receives a file."""


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, instead of interrupting (SIGINT) or killing (SIGTERM) the app.

    The handlers stay installed for the whole block, so a second Ctrl-C while files are being deleted does
    not cut the deletion short; the previous handlers are restored after it. Outside the main thread (where
    Python cannot install handlers) the event is never set.
    """
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: stopped.set())
    try:
        yield stopped
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)


class FolderClaim:
    """A shared ``flock`` on a folder for as long as this app runs; `close` (or collection) releases it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def claim_folders() -> list[FolderClaim]:
    """Claim (and, alone, sweep) the temp folder for request folders, and Gradio's folder when
    ``GRADIO_TEMP_DIR`` names it: Gradio's default folder (``<temp>/gradio``) is shared by every Gradio app
    on the machine, so it is never swept (``app.py`` gives meddx a folder of its own).
    """
    claims = [claim_folder(Path(tempfile.gettempdir()), sweep_request_folders)]
    gradio_folder = os.environ.get(GRADIO_FOLDER_VARIABLE)
    if gradio_folder:
        claims.append(claim_folder(Path(gradio_folder), sweep_gradio_folder))
    return claims


def claim_folder(folder: Path, sweep: Callable[[Path], None]) -> FolderClaim:
    """Hold ``folder`` for this app; when no other meddx app holds it, ``sweep(folder)`` first."""
    if fcntl is None:
        return FolderClaim(None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return FolderClaim(None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another meddx app runs on this folder: its files are not leftovers
        pass
    else:
        with contextlib.suppress(OSError):
            sweep(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return FolderClaim(None)
    return FolderClaim(fd)


def sweep_gradio_folder(folder: Path) -> None:
    """Delete Gradio's content-named folders and stray temporary upload files in ``folder``."""
    delete_written_since(folder, None)


def sweep_request_folders(folder: Path) -> None:
    """Delete the page's ``meddx-request-*`` folders in ``folder`` (the temp folder)."""
    for entry in list(folder.iterdir()):
        if entry.name.startswith(REQUEST_FOLDER_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def delete_written_since(root: Path, since: float | None) -> None:
    """Delete the content-named folders and stray temporary files in ``root`` changed since ``since``
    (every one of them with None)."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            info = entry.lstat()
            if since is not None and info.st_mtime < since - 1:
                continue
            if stat.S_ISDIR(info.st_mode) and CONTENT_FOLDER.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
            elif stat.S_ISREG(info.st_mode) and entry.name.startswith(STRAY_UPLOAD_PREFIX):
                entry.unlink(missing_ok=True)


def exit_after_stop(status: int = 0) -> None:
    """End the process once the app has closed: Python's exit handlers run (multiprocessing removes its
    folder and stops its fork server), then the process exits without tearing down the interpreter.

    After an analysis, the interpreter's own teardown can abort in native code ("terminate called without
    an active exception", SIGABRT): an exit status that reads as a crash, and a core dump (the process's
    memory, films included) where the system writes them. Everything the app wrote is deleted by then.
    """
    import atexit
    import sys

    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
