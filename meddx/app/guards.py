"""Guards around Gradio's own layers: what they print, what they write to disk, and their cache sweep.

- `MeddxBlocks` is the page's ``gr.Blocks``:

  * a call with fewer inputs than the event takes (a raw ``/gradio_api/call/analyze`` with ``[film, notes]``)
    is padded with None, the "not given" of every handler, instead of Gradio raising a ValueError that
    prints a traceback quoting every input ("Received inputs: [..., <the notes>]");
  * an input Gradio cannot convert is refused with a sentence naming the input, never its value (Gradio's
    own message quotes it, and prints a traceback);
  * after ``launch`` the log hygiene is installed again (uvicorn reconfigures its loggers at start), the MCP
    layer is made to delete the files it writes, and ``close`` deletes what the app wrote to Gradio's upload
    folder during its run (nothing patient-derived survives a clean shutdown).

- `install_robust_cache_sweep` makes Gradio's ``delete_cache`` sweep skip what is not a regular file and
  survive any error on one file. Without it, a request that names the upload *folder* as a film puts the
  folder in Gradio's temp-file set, ``os.remove`` raises ``IsADirectoryError`` at the next sweep, and the
  sweep task dies for good (films and reports are never deleted again, and shutdown fails).

- MCP: lone surrogates in the arguments are replaced (the layer's loopback client cannot send them). For a
  base64 film, ``analyze_film`` makes Gradio's MCP layer save the film to its temp folder before
  uploading it again through its loopback client. That first copy is outside any request's bookkeeping;
  `delete_mcp_files` wraps the MCP server's ``tools/call`` handler so that every file the layer saved for
  the call is deleted when the call ends, whatever its outcome.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import route_utils
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from meddx import log_hygiene
from meddx.app.stop import claim_folders, delete_written_since, stop_signals
from meddx.app.uploads import PrivateUploads
from meddx.notes import without_surrogates

_mcp_saved: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("meddx_mcp_saved", default=None)


class MeddxBlocks(gr.Blocks):
    """``gr.Blocks`` with the guards above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before Gradio writes anything: sweep what a hard-killed meddx app left (`meddx.app.stop`).
        self.meddx_claims = claim_folders()
        self.meddx_built = time.time()
        super().__init__(*args, **kwargs)
        self.meddx_on_close: list[Callable[[], None]] = []

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        """Pad a short input list with None (every handler's "not given") instead of failing loudly."""
        missing = len(block_fn.inputs) - len(inputs)
        if missing > 0:
            inputs.extend([None] * missing)

    @staticmethod
    def _format_processing_error(
        block_fn: Any, index: int, block: Any, value: Any, is_input: bool, original_error: Exception
    ) -> str:
        """Gradio's message quotes the value; this one names the input only."""
        role = "input" if is_input else "output"
        return f"The value of {role} {index + 1} ({block.get_block_name()}) could not be read."

    async def preprocess_data(
        self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False
    ):
        """Gradio's preprocessing; any failure becomes a sentence that names no value (and prints nothing)."""
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as exc:  # pydantic's ValidationError and Gradio's path errors quote the input
            raise gr.Error(_preprocess_message(exc, block_fn), print_exception=False) from None

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        """Launch, then guard what the launch set up (loggers, the MCP server); block if asked to."""
        block = not kwargs.get("prevent_thread_lock", False)
        kwargs["prevent_thread_lock"] = True
        app_kwargs = dict(kwargs.get("app_kwargs") or {})
        private = Middleware(PrivateUploads, root=Path(get_upload_folder()), renamed=self._upload_renamed)
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), private]
        kwargs["app_kwargs"] = app_kwargs
        result = super().launch(*args, **kwargs)
        log_hygiene.install()
        if self.mcp_server_obj is not None:
            delete_mcp_files(self.mcp_server_obj)
        if block:  # until SIGINT or SIGTERM, then close: nothing written is left (`meddx.app.stop`)
            with stop_signals() as stopped:
                while self.is_running and not stopped.wait(0.1):
                    pass
                self.close()
        return result

    def _upload_renamed(self, old: str, new: str) -> None:
        """Gradio's record of uploads (swept by ``delete_cache``) follows `PrivateUploads`' move."""
        self.upload_file_set.discard(old)
        self.upload_file_set.add(new)

    def close(self, verbose: bool = True) -> None:
        """Close the server (Gradio waits at most 5 s for it), then delete, whether or not it has finished,
        every file Gradio cached for the app and whatever the app wrote since it was built to Gradio's
        upload folder: uploads never analysed, the MCP layer's copies, served films and reports."""
        try:
            super().close(verbose=verbose)
        finally:
            for callback in self.meddx_on_close:
                with contextlib.suppress(Exception):
                    callback()
            with contextlib.suppress(Exception):
                route_utils.delete_files_created_by_app(self, None)
            delete_written_since(Path(get_upload_folder()), self.meddx_built)
            for claim in self.meddx_claims:
                claim.close()


def _preprocess_message(exc: Exception, block_fn: Any) -> str:
    name = type(exc).__name__
    if name == "InvalidPathError":
        return (
            "The film must be a file uploaded to this server (upload it with gradio_client's handle_file, or "
            "through the page); other paths are refused."
        )
    if name == "ValidationError" and block_fn.inputs:
        return (
            "The film must be a file: an uploaded file's {'path': ..., 'meta': {'_type': 'gradio.FileData'}} "
            "(gradio_client's handle_file builds it)."
        )
    return "One of the inputs could not be read; check each argument's type against the API page."


def install_robust_cache_sweep() -> None:
    """Replace Gradio's cache sweep with one that cannot be stopped by one odd entry (idempotent)."""
    if getattr(route_utils.delete_files_created_by_app, "meddx_robust", False):
        return
    original = route_utils.delete_files_created_by_app

    def delete_files_created_by_app(blocks: Any, age: int | None) -> None:
        for temp_set in getattr(blocks, "temp_file_sets", []):
            for entry in list(temp_set):
                if not _is_regular_file(entry):
                    temp_set.discard(entry)  # a folder or an odd path: never Gradio's to delete
        try:
            original(blocks, age)
        except Exception:  # one file that cannot be removed must not end the sweep for good
            for temp_set in getattr(blocks, "temp_file_sets", []):
                for entry in list(temp_set):
                    with contextlib.suppress(OSError):
                        if age is None or time.time() - Path(entry).lstat().st_ctime > age:
                            os.remove(entry)
                            temp_set.discard(entry)

    delete_files_created_by_app.meddx_robust = True  # type: ignore[attr-defined]
    route_utils.delete_files_created_by_app = delete_files_created_by_app


def _is_regular_file(entry: Any) -> bool:
    try:
        return stat.S_ISREG(os.lstat(entry).st_mode)
    except (OSError, TypeError, ValueError):
        return False


def delete_mcp_files(mcp: Any) -> None:
    """Make ``mcp`` (Gradio's MCP server object) delete the files it saved for a tool call when it ends."""
    if getattr(mcp, "meddx_guarded", False):
        return
    convert = mcp.convert_strings_to_filedata

    def convert_and_remember(value: Any, positions: Any) -> Any:
        # Lone surrogates (JSON escapes can carry them) cannot cross the layer's HTTP loopback: replace them.
        converted = convert(_without_surrogates(value), positions)
        saved = _mcp_saved.get()
        if saved is not None:
            saved.extend(_file_paths(converted))
        return converted

    mcp.convert_strings_to_filedata = convert_and_remember
    server = getattr(mcp, "mcp_server", None)
    handlers = getattr(server, "request_handlers", {})
    for request_type, handler in list(handlers.items()):
        if request_type.__name__ == "CallToolRequest":
            handlers[request_type] = _deleting_saved_files(handler)
    mcp.meddx_guarded = True


def _deleting_saved_files(handler: Callable) -> Callable:
    async def call_tool(request: Any) -> Any:
        saved: list[str] = []
        token = _mcp_saved.set(saved)
        try:
            return await handler(request)
        finally:
            _mcp_saved.reset(token)
            root = Path(get_upload_folder()).resolve()
            for path in saved:
                delete_saved_file(Path(path), root)

    return call_tool


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, dict):
        return {key: _without_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    return value


def _file_paths(value: Any) -> list[str]:
    """The paths of the FileData dicts in ``value`` (any nesting)."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and (value.get("meta") or {}).get("_type") == "gradio.FileData":
            return [value["path"]]
        return [p for item in value.values() for p in _file_paths(item)]
    if isinstance(value, list | tuple):
        return [p for item in value for p in _file_paths(item)]
    return []


def delete_saved_file(path: Path, root: Path) -> None:
    """Delete a file below ``root`` and its folder, if that folder is then empty."""
    target = path.resolve()
    if root not in target.parents or not _is_regular_file(target):
        return
    target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.parent.rmdir()
