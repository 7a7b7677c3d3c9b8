"""The real meddx app launched in-process, for tests that call it through `gradio_client` or HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, at any depth."""
    return [p for p in folder.rglob("*") if p.is_file()]


@contextmanager
def running_app(settings, gradio_tmp: Path) -> Iterator[str]:
    """Build and launch the meddx app on a free port with Gradio's files in ``gradio_tmp``; yield its URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
        from meddx.app.page import build_demo, launch_kwargs, queue_kwargs

        demo = build_demo(settings).queue(**queue_kwargs())
        _, url, _ = demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=free_port(),
            quiet=True,
            **launch_kwargs(settings),
        )
        try:
            yield url
        finally:
            demo.close()


def write_png(path: Path) -> Path:
    """A small synthetic grayscale film: dark field, one bright rectangle."""
    film = np.full((256, 224), 60, np.uint8)
    film[80:170, 60:160] = 200
    Image.fromarray(film).save(path)
    return path
