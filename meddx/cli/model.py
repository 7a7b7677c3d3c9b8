"""``python -m meddx download``: a Hub model copied into a folder that loads offline."""

from __future__ import annotations

import argparse


def cmd_download(args: argparse.Namespace) -> int:
    """Copy a Hub model into a self-contained folder for offline use."""
    from meddx.config import DEFAULT_MODEL
    from meddx.model.spec import download_model

    folder = download_model(args.model or DEFAULT_MODEL, args.to)
    print(f"Wrote {folder}. Use it with: MEDDX_MODEL=local-dir:{folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``download`` to the command line."""
    p = sub.add_parser("download", help="copy a Hub model into a folder that loads offline")
    p.add_argument("--to", required=True, help="destination folder")
    p.add_argument("--model", help="hf-hub:org/name[@rev] (default: BiomedCLIP)")
    p.set_defaults(func=cmd_download)
