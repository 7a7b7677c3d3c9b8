"""meddx web app (Hugging Face Spaces entry point): ``python app.py [--host H] [--port P] [--model SPEC]``."""

import argparse
import dataclasses
import sys
import threading

cli = argparse.ArgumentParser(description="Serve the meddx chest X-ray triage app (decision support only).")
cli.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
cli.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
cli.add_argument("--model", default=None, help="model spec, e.g. hf-hub:org/name or local-dir:/path")
args = cli.parse_args()

from meddx.memory import tune_allocator  # noqa: E402  (after argparse, so --help loads nothing heavy)

tune_allocator()  # fewer malloc arenas, big buffers back to the system when freed (`meddx.memory`)
from meddx.io.bounded import prestart  # noqa: E402

prestart()  # the upload reader's fork server imports its readers in its own process while the model loads
from meddx.config import Settings  # noqa: E402
from meddx.errors import MeddxError, exit_status  # noqa: E402
from meddx.pipeline import warm_up  # noqa: E402

# Gradio's import (pure Python) overlaps the model's load and warm-up (torch, which releases the GIL).
threading.Thread(target=__import__, args=("meddx.app",), name="meddx-import-app", daemon=True).start()
settings = Settings.from_env()
if args.model:
    settings = dataclasses.replace(settings, model=args.model)
try:
    warm_up(settings, background=True)  # a missing or broken model, or a head for other weights, stops here
except MeddxError as exc:
    print(f"meddx: {exc}", file=sys.stderr)
    sys.exit(exit_status(exc))

from meddx.app import build_demo, launch_kwargs, queue_kwargs  # noqa: E402

try:
    demo = build_demo(settings).queue(**queue_kwargs())  # with MEDDX_FEEDBACK_REPO, reaches the Hub dataset
except MeddxError as exc:
    print(f"meddx: {exc}", file=sys.stderr)
    sys.exit(exit_status(exc))
demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs(settings))
