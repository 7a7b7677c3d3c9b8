"""What every command shares: `Settings` from the environment, with ``--model``/``--probe`` on top."""

from __future__ import annotations

import argparse
from dataclasses import replace

from meddx.config import Settings


def settings_from(args: argparse.Namespace) -> Settings:
    """`Settings.from_env()`, with the command's ``--model`` and ``--probe`` (when it has them) on top."""
    settings = Settings.from_env()
    if getattr(args, "model", None):
        settings = replace(settings, model=args.model)
    if getattr(args, "probe", None):
        settings = replace(settings, probe=args.probe)
    return settings
