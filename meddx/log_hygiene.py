"""Keep third-party loggers that can carry request bodies out of the application's logs, at every level.

Web and protocol libraries log what they receive and send: ``sse_starlette`` logs every server-sent event in
full at DEBUG (MCP responses, notes included), ``mcp`` logs requests, ``httpx``/``httpcore`` log URLs that
hold upload paths and file names, ``uvicorn`` logs exceptions raised inside a request, ``gradio`` and
``gradio_client`` log payload problems, ``pydicom`` logs decoder tracebacks. meddx needs none of them: each
is set above CRITICAL and stops propagating, so nothing reaches the root logger's handlers or their own, even
when the root logger is at DEBUG.

`install` runs where the app and the CLI configure logging (``app.py``, `meddx.app.page.build_demo`, after
``launch`` in `meddx.app.guards.MeddxBlocks`, because uvicorn reconfigures its loggers when the server
starts, and `meddx.cli.main`). meddx's own loggers are left alone: they never log input.
"""

from __future__ import annotations

import logging

QUIET_LOGGERS = (
    "sse_starlette",
    "mcp",
    "httpx",
    "httpcore",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "starlette",
    "fastapi",
    "gradio",
    "gradio_client",
    "python_multipart",
    "multipart",
    "websockets",
    "h11",
    "h2",
    "hpack",
    "anyio",
    "asyncio",
    "urllib3",
    "requests",
    "safehttpx",
    "groovy",
    "pydicom",
    "PIL",
    "highdicom",
    "dicomweb_client",
    "fhir",
    "fhir_core",
)
"""Loggers (and their children) that never reach the application's logs."""
OFF = logging.CRITICAL + 10
"""A level above every level a library logs at."""


def install() -> None:
    """Silence `QUIET_LOGGERS` and every existing child of theirs that set its own level or handlers."""
    for name in QUIET_LOGGERS:
        _silence(logging.getLogger(name))
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and is_quiet(name):
            _silence(logger)


def is_quiet(name: str) -> bool:
    """Whether records of logger ``name`` are kept out of the logs."""
    return any(name == quiet or name.startswith(quiet + ".") for quiet in QUIET_LOGGERS)


def _silence(logger: logging.Logger) -> None:
    logger.setLevel(OFF)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(logging.NullHandler())
