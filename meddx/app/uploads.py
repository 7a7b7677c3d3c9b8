"""Uploaded films: each is deleted when the last request using it finishes, and nothing is left behind.

Gradio streams an upload into a temporary file ``<upload folder>/tmpXXXXXXXX``, creates the folder
``<upload folder>/<SHA-256 of the content>/`` and renames the file into it. Requests that send the same film
therefore share one path: `UploadsInUse` deletes the file when the last request holding it finishes.

The emptied folder is not removed at that moment. An identical upload arriving then may already have created
(found) the folder and be about to rename its temporary file into it; removing the folder in between makes
that rename fail, the request lose its film, and Gradio leave the temporary file behind (seen once in CI with
four clients sending one film 24 times). `UploadsInUse.sweep` removes folders that have stayed empty for
`EMPTY_FOLDER_AGE_S`, and deletes temporary files that a failed upload left behind once they are
`STRAY_FILE_AGE_S` old (an upload in progress keeps its file's modification time fresh). It runs after each
request and every `SWEEP_EVERY_S` seconds while the app runs.
"""

from __future__ import annotations

import contextlib
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EMPTY_FOLDER_AGE_S = 30.0
"""An upload's folder is removed once it has been empty this long."""
STRAY_FILE_AGE_S = 600.0
"""A temporary upload file left in the upload folder (its upload failed) is deleted once this old."""
SWEEP_EVERY_S = 30.0
"""How often the upload folder is swept while the app runs, besides after each request."""
TEMPORARY_PREFIX = "tmp"
"""The name Python's `tempfile` (which Gradio uses while receiving an upload) gives its files."""


def delete_upload(path: Path, root: Path) -> None:
    """Delete an uploaded file if it lies below the upload folder ``root``; its folder stays (see above)."""
    target = path.resolve()
    if root.resolve() in target.parents:
        target.unlink(missing_ok=True)


def sweep_upload_folder(
    root: Path, *, empty_folder_age_s: float = EMPTY_FOLDER_AGE_S, stray_file_age_s: float = STRAY_FILE_AGE_S
) -> None:
    """Remove the folders in ``root`` that have been empty long enough, and stale temporary upload files."""
    now = time.time()
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        age = now - info.st_mtime  # a folder's changes when a file is added to it or removed from it
        stray = stat.S_ISREG(info.st_mode) and entry.name.startswith(TEMPORARY_PREFIX)
        if stat.S_ISDIR(info.st_mode) and age >= empty_folder_age_s:
            with contextlib.suppress(OSError):  # not empty (in use, or Gradio's own cache), or already gone
                entry.rmdir()
        elif stray and age >= stray_file_age_s:
            entry.unlink(missing_ok=True)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(inode, modification time) of a file, None if it does not exist: a new upload changes both."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


class UploadsInUse:
    """The uploads in ``root`` (Gradio's upload folder) that running requests read; each is deleted when the
    last request using it finishes.

    The last request holding a path deletes it, unless the file was uploaded again meanwhile: then the
    request that uploaded it will. (A request still waiting in the queue holds nothing yet: if an identical
    upload was analysed and deleted before it started, it finds no file and must tell the user so.)
    """

    def __init__(
        self,
        root: Path,
        *,
        sweep_every_s: float | None = SWEEP_EVERY_S,
        empty_folder_age_s: float = EMPTY_FOLDER_AGE_S,
    ) -> None:
        self.root = root.resolve()
        self._lock = threading.Lock()
        self._holders: Counter[Path] = Counter()
        self._sweep_every_s = sweep_every_s
        self._empty_folder_age_s = empty_folder_age_s
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()

    def is_upload(self, path: Path) -> bool:
        """Whether ``path`` can be an upload: a regular file (not a link) in a folder of the upload folder.

        The upload folder itself, any folder, and anything deeper or elsewhere are not films. A path in the
        right place whose file is gone is one (the caller then says it was deleted).
        """
        in_place = False
        try:
            parent = path.parent.resolve()
            in_place = parent.parent == self.root and parent != self.root and path.name not in ("", ".", "..")
            return in_place and stat.S_ISREG(path.lstat().st_mode)
        except FileNotFoundError:
            return in_place
        except (OSError, ValueError):
            return False

    @contextmanager
    def hold(self, path: Path) -> Iterator[None]:
        """Use ``path`` for the length of the block; delete it afterwards if no one else uses it."""
        self._start_sweeper()
        with self._lock:
            self._holders[path] += 1
            seen = _file_identity(path)
        try:
            yield
        finally:
            with self._lock:
                self._holders[path] -= 1
                if not self._holders[path]:
                    del self._holders[path]
                    if _file_identity(path) in (seen, None):
                        delete_upload(path, self.root)
            self.sweep()

    def sweep(self) -> None:
        """Sweep the upload folder now; a folder that cannot be read is left for the next sweep."""
        with contextlib.suppress(OSError):
            sweep_upload_folder(self.root, empty_folder_age_s=self._empty_folder_age_s)

    def _start_sweeper(self) -> None:
        """Sweep every few seconds from the first request on, so that the last request's folder goes too."""
        with self._lock:
            if self._sweeper is not None or self._sweep_every_s is None:
                return
            self._sweeper = threading.Thread(
                target=self._sweep_forever, args=(self._sweep_every_s,), name="upload-sweep", daemon=True
            )
            self._sweeper.start()

    def _sweep_forever(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            self.sweep()

    def close(self) -> None:
        """Stop the background sweeps (a daemon thread; it also ends with the process)."""
        self._closed.set()
