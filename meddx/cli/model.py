"""``python -m meddx download``: a Hub model copied into a folder that loads offline."""

from __future__ import annotations

import argparse


def cmd_download(args: argparse.Namespace) -> int:
    """Copy a Hub model into a self-contained folder for offline use.

    Raises:
        ModelError: the model cannot be fetched; offline, the message says where to run this command
            instead (the loader's own advice is to run it, which the user just did).
    """
    from huggingface_hub.errors import LocalEntryNotFoundError

    from meddx.config import DEFAULT_MODEL
    from meddx.errors import ModelError
    from meddx.model.spec import download_model

    spec = args.model or DEFAULT_MODEL
    try:
        folder = download_model(spec, args.to)
    except ModelError as exc:
        if not isinstance(exc.__cause__, LocalEntryNotFoundError):
            raise
        raise ModelError(
            f"`download` fetches {spec} from the Hugging Face Hub, which cannot be reached from here "
            "(offline mode or no network), and the model is not in the local Hugging Face cache. Run this "
            "same command on a machine with internet access (unset HF_HUB_OFFLINE there), copy the folder "
            "it writes to this machine, and set MEDDX_MODEL=local-dir:FOLDER."
        ) from None
    print(f"Wrote {folder}. Use it with: MEDDX_MODEL=local-dir:{folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``download`` to the command line."""
    p = sub.add_parser("download", help="copy a Hub model into a folder that loads offline")
    p.add_argument("--to", required=True, help="destination folder")
    p.add_argument("--model", help="hf-hub:org/name[@rev] (default: BiomedCLIP)")
    p.set_defaults(func=cmd_download)
