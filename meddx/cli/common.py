"""What every command shares: `Settings` from the environment, with ``--model``, ``--probe`` and ``--device``
on top."""

from __future__ import annotations

import argparse
from dataclasses import replace

from meddx.config import Settings
from meddx.device import parse_device


def settings_from(args: argparse.Namespace) -> Settings:
    """`Settings.from_env()`, with the command's ``--model`` and ``--probe`` (when it has them) on top."""
    settings = Settings.from_env()
    if getattr(args, "model", None):
        settings = replace(settings, model=args.model)
    if getattr(args, "probe", None):
        settings = replace(settings, probe=args.probe)
    return with_device(settings, args)


def with_device(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the command's ``--device`` (when given) on top."""
    if getattr(args, "device", None):
        settings = replace(settings, device=parse_device(args.device))
    return settings


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda|cuda:N`` (default $MEDDX_DEVICE, else auto)."""
    parser.add_argument(
        "--device",
        help="where the model runs: auto (CUDA if present, else CPU), cpu, cuda or cuda:N "
        "(default $MEDDX_DEVICE)",
    )
