"""No telemetry from the libraries meddx runs: ONNX Runtime's is switched off before it starts.

ONNX Runtime's Linux and macOS wheels (1.29 on) carry Microsoft's 1DS telemetry. When its environment is
created, on import, it writes a session file (``.ses``: a launch time and a random install id) into TMPDIR, a
device id (``~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``) and a database of events queued for
upload next to it. The environment switch ``ORT_DISABLE_TELEMETRY=1``, set before that import, stops all
three (measured with onnxruntime 1.31.1: nothing is written). The API call,
``onnxruntime.disable_telemetry_events()``, only stops events logged after it, once the environment exists;
it is called as well, for a process that imported onnxruntime before meddx could set the switch.
Gradio's analytics are off by their own switches (`meddx.app.page` builds the page with
``analytics_enabled=False``; ``scripts/app.sh`` sets ``GRADIO_ANALYTICS_ENABLED=False``).
"""

from __future__ import annotations

import os
import sys

ONNXRUNTIME_SWITCH = "ORT_DISABLE_TELEMETRY"
"""ONNX Runtime's environment switch: "1" before the import turns its telemetry off entirely."""


def disable_onnxruntime_telemetry() -> None:
    """Turn ONNX Runtime's telemetry off: the switch for an import to come, the API call for one made."""
    os.environ[ONNXRUNTIME_SWITCH] = "1"
    runtime = sys.modules.get("onnxruntime")
    disable = getattr(runtime, "disable_telemetry_events", None)
    if disable is not None:
        disable()
