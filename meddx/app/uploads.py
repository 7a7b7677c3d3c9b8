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
import json
import os
import secrets
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


class PrivateUploads:
    """ASGI middleware: every file Gradio's upload route stores is moved to a folder whose name adds a
    random 128-bit token to the content hash, and the upload's answer names the new path.

    Gradio names an upload by its content alone (``<SHA-256>/<name>``), so anyone who knows a film's hash and
    name can send that path to ``/analyze``: analyse someone else's upload, and delete it under its owner.
    With the token, only the request that uploaded the file (the browser session, the ``gradio_client`` or
    MCP call that received the path) can name it. Identical uploads no longer share one file either: each
    gets its own name (a hard link to the same content when they arrive together).

    ``renamed(old, new)`` is told of each move (Gradio's own record of uploads must follow it).
    """

    def __init__(self, app: Any, *, root: Path, renamed: Any = None) -> None:
        self.app = app
        self.root = root.resolve()
        self.renamed = renamed
        self._lock = threading.Lock()
        self._latest: dict[Path, Path] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").endswith("/gradio_api/upload")
        ):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        body: list[bytes] = []

        async def hold(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            else:  # pragma: no cover (trailers and the like: pass through)
                await send(message)

        await self.app(scope, receive, hold)  # returns after the route's background moves have run
        if start is None:
            return
        content = b"".join(body)
        if start.get("status") == 200:
            content = self._rewrite(content)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    def _rewrite(self, content: bytes) -> bytes:
        try:
            paths = json.loads(content)
        except ValueError:
            return content
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return content
        return json.dumps([self.private_path(Path(p)) for p in paths]).encode()

    def private_path(self, path: Path) -> str:
        """Move ``path`` (``<root>/<hash>/<name>``) to ``<root>/<hash>-<token>/<name>``; its new path."""
        if path.parent.parent.resolve() != self.root:
            return str(path)
        target = self.root / f"{path.parent.name}-{secrets.token_hex(16)}" / path.name
        with self._lock:
            try:
                target.parent.mkdir()
                try:
                    os.link(path, target)
                    path.unlink()
                except FileNotFoundError:  # an identical upload just took it: share its content
                    os.link(self._latest[path], target)
                self._latest[path] = target
            except (OSError, KeyError):
                with contextlib.suppress(OSError):
                    target.parent.rmdir()
                return str(path)
        if self.renamed is not None:
            with contextlib.suppress(Exception):
                self.renamed(str(path), str(target))
        return str(target)
