"""MCP answers as JSON: Gradio 6's MCP layer turns each output with ``str()``, so a result object reached
MCP clients as a Python-style string (single quotes, ``None``). `install` makes every dict or list output
(not a file) JSON text instead, one text item per output (``/analyze``: the result JSON, then the Markdown
report); strings and files pass through unchanged.

Gradio 6.31's ``structured_output`` only wraps that same text content in ``{"result": [...]}``, so the JSON
text is the structured answer an MCP client gets: ``json.loads(content[0].text)`` is the ``/analyze``
result (`meddx.result.SCHEMA_VERSION`).
"""

from __future__ import annotations

import json
from typing import Any


def _as_json(output: Any) -> Any:
    from gradio_client import utils as client_utils

    if isinstance(output, dict | list) and not client_utils.is_file_obj_with_meta(output):
        return json.dumps(output, ensure_ascii=False, allow_nan=False)
    return output


def install() -> None:
    """Patch Gradio's MCP output step once per process (idempotent; no-op without the ``mcp`` extra)."""
    try:
        from gradio.mcp import GradioMCPServer
    except ImportError:  # gradio without its MCP extra: nothing to patch
        return
    original = GradioMCPServer.postprocess_output_data
    if getattr(original, "meddx_json", False):
        return

    def postprocess_output_data(self: Any, data: Any, root_url: str) -> Any:
        outputs = []
        for output in data:  # a queued call with several outputs comes back as one tuple of them
            outputs.extend(output if isinstance(output, tuple) else [output])
        return original(self, [_as_json(output) for output in outputs], root_url)

    postprocess_output_data.meddx_json = True  # type: ignore[attr-defined]
    GradioMCPServer.postprocess_output_data = postprocess_output_data  # type: ignore[method-assign]
