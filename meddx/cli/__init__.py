"""The command line (``python -m meddx``): one parser, one error-to-exit-code map, a module per family."""

from meddx.cli.main import main

__all__ = ["main"]
