"""The model loads in the background while the page already serves (``app.py``); a request that needs the
model waits here for it, and says so.

Everything a person sees first (the page, uploading, typing notes, reading the notes) needs no model, so
``app.py`` starts serving as soon as Gradio has built the page, and `MODEL` loads and warms up the model on
a thread meanwhile. An analysis that arrives first shows "Loading the model" and starts when it is ready.
If the model cannot be loaded, the loader's ``on_error`` runs (``app.py`` prints one line and stops the
process), so no request is ever answered by a half-loaded model. Where nothing was started (the tests, a
page built in-process), `ModelLoading.wait` returns at once and the pipeline loads the model on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WAIT_STEP_S = 0.5
"""How often a waiting request reports that it is still waiting."""


class ModelLoading:
    """One background load of the model: `start` it once, `wait` for it from any request thread."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._done.set()  # nothing started: nothing to wait for
        self._started: float | None = None
        self._failed = False

    @property
    def ready(self) -> bool:
        """Whether no load is running (finished, or never started)."""
        return self._done.is_set() and not self._failed

    def start(
        self, load: Callable[[], object], on_error: Callable[[BaseException], None]
    ) -> threading.Thread:
        """Run ``load()`` on a daemon thread; ``on_error(exc)`` if it raises (requests keep waiting)."""
        self._done.clear()
        self._started = time.monotonic()

        def run() -> None:
            try:
                load()
            except BaseException as exc:  # the owner decides what a failed load means (app.py: stop)
                self._failed = True
                on_error(exc)
                return
            log.info("model ready %.1f s after its load started", time.monotonic() - self._started)
            self._done.set()

        thread = threading.Thread(target=run, name="meddx-load-model", daemon=True)
        thread.start()
        return thread

    def wait(self, report: Callable[[str], None] | None = None) -> None:
        """Return once the model is ready, calling ``report(sentence)`` every `WAIT_STEP_S` until then."""
        while not self._done.wait(WAIT_STEP_S):
            if report is not None and self._started is not None:
                waited = time.monotonic() - self._started
                report(
                    f"Loading the model (started {waited:.0f} s ago); the analysis starts when it is ready"
                )


MODEL = ModelLoading()
"""The process's model load (``app.py`` starts it; the analysis handlers wait for it)."""
