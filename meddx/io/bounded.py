"""`load_study` in a short-lived worker process with a wall-clock limit and a memory limit.

The readers below this module bound what they can see coming (declared sizes, inflated bytes, pages,
sequence items), but a library call (Pillow's, pydicom's, a JPEG 2000 decoder's) can still spend time or
memory meddx cannot interrupt from inside. Here the whole read runs in a child process: it gets the
upload's path or bytes, sets its own address-space limit (`resource.RLIMIT_AS`, Linux and macOS), reads,
and sends back the 8-bit pixels, the `ImageInfo` and the warnings. If it has not answered within
`Limits.read_timeout_s` it is killed; if it runs out of memory or dies, the read is refused. Either way the
person gets one sentence, and the server's own memory and threads never held the file's decoding.

Children are forked from multiprocessing's ``forkserver`` (a clean single-threaded process that has
imported the readers once, `prestart`), so a read costs one fork, not an interpreter start, and never forks
the server with its threads; each read gets a fresh child, so nothing of one file is left in a process that
reads the next. Unlike a plain ``forkserver`` child, a reader does not re-run the main script (``app.py``
would start a second app): `_ReaderPopen` leaves the main module out of what the child prepares. Where
``forkserver`` does not exist (Windows), the read runs in the calling process, unbounded.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import threading
from multiprocessing import context as mp_context
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

from meddx.config import Limits
from meddx.errors import InputError
from meddx.io.source import file_label, read_source
from meddx.io.study import Study

try:  # not on Windows
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]

FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
"""Whether reads can be bounded here (POSIX)."""
_PRELOAD = ["meddx.io", "meddx.io.bounded", "meddx.io.warmup"]
_started = threading.Lock()
_prestarted = False
_MAIN_MODULE_KEYS = ("init_main_from_name", "init_main_from_path")

if FORKSERVER:
    from multiprocessing import forkserver, popen_forkserver, spawn

    _CONTEXT = multiprocessing.get_context("forkserver")

    class _ReaderPopen(popen_forkserver.Popen):
        """``popen_forkserver.Popen`` whose child does not import the parent's main module."""

        def _launch(self, process_obj: Any) -> None:  # the standard library's, less the main module
            prep_data = spawn.get_preparation_data(process_obj._name)
            for key in _MAIN_MODULE_KEYS:
                prep_data.pop(key, None)
            buf = io.BytesIO()
            mp_context.set_spawning_popen(self)
            try:
                mp_context.reduction.dump(prep_data, buf)
                mp_context.reduction.dump(process_obj, buf)
            finally:
                mp_context.set_spawning_popen(None)
            self.sentinel, w = forkserver.connect_to_new_process(self._fds)
            _parent_w = os.dup(w)
            self.finalizer = mp_util.Finalize(self, mp_util.close_fds, (_parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    class _ReaderProcess(mp_context.ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> _ReaderPopen:
            return _ReaderPopen(process_obj)


def prestart() -> None:
    """Start the fork server now (it imports the readers once, about a second), not on the first upload."""
    global _prestarted
    with _started:
        if _prestarted:
            return
        if FORKSERVER:
            _CONTEXT.set_forkserver_preload(_PRELOAD)
            forkserver.ensure_running()
        _prestarted = True


def load_study_bounded(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str | None = None,
    limits: Limits | None = None,
) -> Study:
    """`meddx.io.load_study` in a worker process killed after ``limits.read_timeout_s`` seconds, with at
    most ``limits.read_memory_mb`` MB of memory; ``read_timeout_s`` 0 reads in this process instead.

    Raises:
        InputError: everything `load_study` refuses, and a read that ran past its time or memory limit
            (the message says which, and what to upload instead).
    """
    from meddx.io import load_study

    limits = limits or Limits()
    if filename is None and isinstance(source, str | os.PathLike):
        filename = Path(source).name
    if not limits.read_timeout_s or not FORKSERVER:
        return load_study(source, filename=filename, limits=limits)
    label = file_label(filename)
    if not isinstance(source, str | os.PathLike):  # bytes or a file object: read here, within the limit
        source = read_source(source, label, limits)
    prestart()
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    worker = _ReaderProcess(
        target=_read_in_worker,
        args=(sender, source, filename, limits),
        name="meddx-read",
        daemon=True,
    )
    try:
        worker.start()
        sender.close()
        answer = _receive(receiver, worker, limits.read_timeout_s)
    finally:
        receiver.close()
        if worker.is_alive():
            worker.kill()
        with contextlib.suppress(ValueError, AssertionError):  # never started
            worker.join(5)
            worker.close()
    return _study_from(answer, label, limits)


def _receive(receiver: Connection, worker: Any, timeout_s: float) -> tuple | None:
    """The worker's answer, or None if it did not come within ``timeout_s`` (or the worker died)."""
    try:
        if receiver.poll(timeout_s):
            return receiver.recv()
    except (EOFError, OSError):  # the worker died before answering (killed for memory, a crash)
        return ("died",)
    return None


def _study_from(answer: tuple | None, label: str, limits: Limits) -> Study:
    if answer is None:
        raise InputError(
            f"{label} took longer than {limits.read_timeout_s:g} s to read, so meddx stopped reading it. "
            "Please upload a single image, exported uncompressed or as PNG."
        )
    kind, *rest = answer
    if kind == "ok":
        pixels, info, warnings, demographics, source = rest
        return Study(
            pixels=pixels, info=info, warnings=list(warnings), demographics=demographics, source=source
        )
    if kind == "refused":
        raise InputError(rest[0])
    if kind == "memory" or kind == "died":
        raise InputError(
            f"{label} needs more than {limits.read_memory_mb:,} MB of memory to read, so meddx stopped "
            "reading it. Please upload a smaller export of the image, or a PNG."
        )
    raise InputError(
        f"{label} could not be read (its decoder failed). Please export it again, uncompressed or as PNG."
    )


def _read_in_worker(sender: Connection, source: Any, filename: str | None, limits: Limits) -> None:
    """The worker: limit memory, read, send ("ok", pixels, info, warnings, demographics, source) or why not.

    Never raises."""
    try:
        _limit_memory(limits.read_memory_mb)
        from meddx.io import load_study

        study = load_study(source, filename=filename, limits=limits)
        answer: tuple = ("ok", study.pixels, study.info, study.warnings, study.demographics, study.source)
    except InputError as exc:
        answer = ("refused", str(exc))
    except MemoryError:
        answer = ("memory",)
    except BaseException:  # the parent says "could not be read"; nothing of the file is sent
        answer = ("failed",)
    try:
        sender.send(answer)
    except MemoryError:
        with contextlib.suppress(BaseException):
            sender.send(("memory",))
    finally:
        sender.close()


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space at its current size plus ``megabytes`` (where the OS allows)."""
    if resource is None or not megabytes:
        return
    try:
        with open("/proc/self/statm") as statm:  # Linux: the current virtual size, in pages
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        current = 0
    limit = current + megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
