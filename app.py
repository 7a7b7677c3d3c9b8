"""meddx web app (Hugging Face Spaces entry point): ``python app.py [--host H] [--port P] [--model SPEC]``."""

import argparse
import dataclasses
import os
import sys
import tempfile
import traceback

cli = argparse.ArgumentParser(description="Serve the meddx chest X-ray triage app (decision support only).")
cli.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
cli.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
cli.add_argument("--model", default=None, help="model spec, e.g. hf-hub:org/name or local-dir:/path")
args = cli.parse_args()

# Before Gradio is imported: its files in a folder of meddx's own, swept at start and stop (meddx.app.stop).
os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "meddx-gradio"))

from meddx.memory import tune_allocator  # noqa: E402  (after argparse, so --help loads nothing heavy)

tune_allocator()  # fewer malloc arenas, big buffers back to the system when freed (`meddx.memory`)
from meddx.io.bounded import prestart  # noqa: E402

prestart()  # the upload reader's fork server imports its readers in its own process while the model loads
from meddx.app.loading import MODEL  # noqa: E402
from meddx.config import Settings  # noqa: E402
from meddx.errors import MeddxError, exit_status  # noqa: E402

settings = Settings.from_env()
if args.model:
    settings = dataclasses.replace(settings, model=args.model)


def load_model() -> None:
    """Load and warm up the model (`meddx.pipeline.warm_up`); a missing or broken model, or a head for other
    weights, raises here."""
    from meddx.pipeline import warm_up

    warm_up(settings, background=True)


def stop(exc: BaseException) -> None:
    """A model that cannot be loaded stops the app: one line (a meddx error) or the traceback (a bug)."""
    if isinstance(exc, MeddxError):  # one line; Gradio may already have printed the page's address
        print(
            f"meddx: {exc} The app has stopped: the address above no longer answers.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(exit_status(exc))
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


# The page serves while the model loads (`meddx.app.loading`): analyses wait for it, everything else does not.
MODEL.start(load_model, on_error=stop)
from meddx.app import build_demo, launch_kwargs, queue_kwargs  # noqa: E402
from meddx.app.stop import exit_after_stop  # noqa: E402

try:
    demo = build_demo(settings).queue(**queue_kwargs())  # with MEDDX_FEEDBACK_REPO, reaches the Hub dataset
except MeddxError as exc:
    print(f"meddx: {exc}", file=sys.stderr)
    sys.exit(exit_status(exc))
demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs(settings))
exit_after_stop()  # stopped by SIGINT or SIGTERM and closed: nothing it wrote is left (`meddx.app.stop`)
