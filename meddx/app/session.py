"""The film of each open page, held in memory so that it can be analysed again without a new upload.

One film per browser session (Gradio's session hash): a new upload replaces it; "New patient", closing the
page (``demo.unload``) and `FILM_TTL_S` without use delete it. What is held is the film as read (the
windowed 8-bit pixels and the non-identifying `ImageInfo`), never the uploaded file: the upload itself is
deleted as soon as it has been read, so a DICOM's identifiers never stay. Nothing is written to disk.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from meddx.io import Study

FILM_TTL_S = 30 * 60.0
"""A session's film is forgotten after this many seconds without an upload or an analysis."""
MAX_SESSIONS = 64
"""At most this many films are held; the least recently used goes first."""


@dataclass
class SessionFilm:
    """One session's film: the study as read, its (cleaned) file name, when it came, and the last result's
    maps by finding label (so that clicking a finding can show its map)."""

    study: Study
    name: str
    received: str
    """UTC time of the upload, ``HH:MM:SS UTC``."""
    maps: dict[str, int] = field(default_factory=dict)
    """Finding label -> position of its map in the page's map gallery, for the last analysis."""
    ids: dict[str, str] = field(default_factory=dict)
    """Finding label -> finding id, for the last analysis."""
    analysed_notes: str | None = None
    """The notes the last analysis of this film used ("" for none; None: not analysed yet), held in memory
    like the film, so that the page can mark its results out of date when the notes change."""


class SessionFilms:
    """Films by session, each forgotten after ``ttl_s`` seconds without use (thread-safe)."""

    def __init__(self, *, ttl_s: float = FILM_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._films: OrderedDict[str, tuple[SessionFilm, float]] = OrderedDict()

    def put(self, session: str, film: SessionFilm) -> None:
        """Hold ``film`` for ``session``, replacing the one it had."""
        with self._lock:
            self._sweep()
            self._films[session] = (film, time.monotonic())
            self._films.move_to_end(session)
            while len(self._films) > self.max_sessions:
                self._films.popitem(last=False)

    def get(self, session: str) -> SessionFilm | None:
        """The session's film (its time to live starts again), or None."""
        with self._lock:
            self._sweep()
            held = self._films.get(session)
            if held is None:
                return None
            self._films[session] = (held[0], time.monotonic())
            self._films.move_to_end(session)
            return held[0]

    def drop(self, session: str) -> None:
        """Forget the session's film (New patient, page closed)."""
        with self._lock:
            self._films.pop(session, None)

    def __len__(self) -> int:
        with self._lock:
            self._sweep()
            return len(self._films)

    def _sweep(self) -> None:
        now = time.monotonic()
        for session in [s for s, (_, used) in self._films.items() if now - used > self.ttl_s]:
            del self._films[session]
