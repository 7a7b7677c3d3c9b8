"""``python -m meddx``: one parser, one error-to-exit-status map, one module per command family.

- `meddx.cli.analyze`: ``analyze``; `meddx.cli.model`: ``download``; `meddx.cli.train`: ``train``;
  `meddx.cli.evaluate`: ``eval``; `meddx.cli.promote`: ``promote``; `meddx.cli.calibrate`: ``calibrate``
  (`meddx.cli.labelled`: what these four share); `meddx.cli.notes`: ``notes``, ``notes-eval``;
  `meddx.batch.cli`: ``batch``, and
  `meddx.batch.embed`: ``batch-embed`` (archives on Ray, the ``scale`` extra); `meddx.cli.dev`:
  ``make-tiny-model``, ``attribution-check``, ``bench``, ``feedback-loop``, and ``bench-batch``
  (development tools, from a source checkout only); `meddx.cli.explain_eval`: ``explain-eval``;
  `meddx.cli.pacs`: ``pacs`` (DICOMweb round trip).

Imports are lazy so that ``--help`` and the light commands start fast. Errors meant for people
(`meddx.errors.MeddxError`) print one line on stderr and exit with `meddx.errors.exit_status`; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from meddx import log_hygiene
from meddx.cli import analyze, dev, model
from meddx.errors import EXIT_INPUT, MeddxError, exit_status

# Sub-commands with their own argument parsers: name -> (module, function(argv) -> exit status, help).
DELEGATED = {
    "notes": ("meddx.cli.notes", "run_notes", "extract concepts from clinical notes"),
    "train": ("meddx.cli.train", "run_train", "train a fine-tuned head on labelled films"),
    "eval": (
        "meddx.cli.evaluate",
        "run_eval",
        "measure scores on labelled films, or compare models on the same films (repeat --model)",
    ),
    "promote": (
        "meddx.cli.promote",
        "run_promote",
        "replace the served head only if a candidate measures better",
    ),
    "calibrate": (
        "meddx.cli.calibrate",
        "run_calibrate",
        "calibrate zero-shot scores and choose operating thresholds on labelled films",
    ),
    "notes-eval": (
        "meddx.cli.notes",
        "run_notes_eval",
        "measure the notes reader on a labelled sentence set (dev)",
    ),
    "batch": ("meddx.batch.cli", "run_batch", "analyse an archive of films on Ray (meddx[scale])"),
    "batch-embed": ("meddx.batch.embed", "run_batch_embed", "fill train's embedding cache on Ray"),
    "bench-batch": ("meddx.dev.bench_batch", "run_bench_batch", "films/s of analyze FOLDER vs batch (dev)"),
    "pacs": ("meddx.cli.pacs", "run_pacs", "analyse chest films in a DICOMweb PACS and store DICOM SRs back"),
    "explain-eval": ("meddx.cli.explain_eval", "run_explain_eval", "score the maps against expert boxes"),
    "train-anatomy": ("meddx.cli.anatomy", "run_train_anatomy", "train and measure the lung-field model"),
}
DEV_PACKAGE = "meddx.dev"


def _delegate(name: str, argv: list[str]) -> int:
    module, function, _ = DELEGATED[name]
    if name == "notes":
        from meddx.config import Settings

        # MEDDX_MAX_NOTE_CHARS, as everywhere else; an explicit --max-chars (parsed last) still wins.
        argv = ["--max-chars", str(Settings.from_env().limits.max_note_chars), *argv]
    return getattr(importlib.import_module(module), function)(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m meddx",
        description="meddx: chest X-ray triage support (decision support, not a diagnosis).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    analyze.register(sub)
    model.register(sub)
    dev.register(sub)
    for name, (_, _, text) in DELEGATED.items():
        sub.add_parser(name, help=f"{text} (see `{name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    log_hygiene.install()  # third-party loggers (pydicom, httpx, ...) stay out of the CLI's stderr
    try:
        if argv and argv[0] in DELEGATED:
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except MeddxError as exc:
        print(f"meddx: {exc}", file=sys.stderr)
        return exit_status(exc)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(DEV_PACKAGE):
            raise
        print(
            f"meddx: `{argv[0]}` is a development tool; it runs from a source checkout of meddx "
            "(python -m meddx ... in the repository), not from an installed package.",
            file=sys.stderr,
        )
        return EXIT_INPUT
