"""What the commands on labelled films share (`meddx.cli.train`, `meddx.cli.evaluate`, `meddx.cli.promote`,
`meddx.cli.calibrate`): the train extra's check, the data options, loading the data and the embedding
cache (optionally filled on Ray first), one-line errors, and plain-text tables."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from meddx.cli.common import add_device_option
from meddx.errors import InputError, MeddxError, exit_status

# What `train` and `eval` need beyond requirements.txt (requirements-train.txt): import name -> package.
TRAIN_EXTRA = {"datasets": "datasets", "matplotlib": "matplotlib", "sklearn": "scikit-learn"}
TRAIN_EXTRA_HINT = 'pip install "meddx[train]" (or pip install -r requirements-train.txt)'


def need_train_extra() -> None:
    """Refuse, in one line, when a package of the train extra is missing."""
    missing = [package for name, package in TRAIN_EXTRA.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"needs the train extra ({', '.join(missing)} missing): {TRAIN_EXTRA_HINT}.")


def add_data_options(
    parser: argparse.ArgumentParser, *, feedback: bool = False, models: bool = False
) -> None:
    """``--data``, ``--labels``, ``--model`` (repeatable with ``models``), the cache and Ray options."""
    if feedback:
        parser.add_argument(
            "--data",
            required=True,
            action="append",
            help="image folder, .csv, .jsonl, hf:org/name[:split], or clinician feedback (feedback:DIR, "
            "hf-dataset:owner/name); repeat to combine",
        )
    else:
        parser.add_argument("--data", required=True, help="image folder, .csv, .jsonl or hf:org/name[:split]")
    parser.add_argument("--labels", help='comma-separated labels, e.g. "nodule,effusion" (default: all)')
    if models:
        parser.add_argument(
            "--model",
            action="append",
            help="hf-hub:org/name[@rev] or local-dir:/path (default $MEDDX_MODEL); repeat to compare models "
            "on the same films",
        )
    else:
        parser.add_argument("--model", help="hf-hub:org/name[@rev] or local-dir:/path (default $MEDDX_MODEL)")
    parser.add_argument(
        "--cache-dir",
        help="embedding cache folder (default $MEDDX_CACHE_DIR/embeddings, ~/.cache/meddx/embeddings)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="embed the images on Ray first (a cluster address, or 'local'), into the same embedding cache "
        "(needs the scale extra); training then reads every embedding from the cache",
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray embedding actors (with --ray-address)")
    add_device_option(parser)


def fail(command: str, exc: MeddxError) -> int:
    """Print ``meddx COMMAND: message`` on stderr; return the exit status of the error."""
    print(f"meddx {command}: {exc}", file=sys.stderr)
    return exit_status(exc)


def load_labelled(args: argparse.Namespace, models: list[str | None] | None = None):
    """Settings, data (restricted to --labels) and the embedding cache, filled on Ray first for each model
    when ``--ray-address`` is given (``models``: the specs, None for $MEDDX_MODEL; default ``--model``)."""
    from meddx.cli.common import with_device
    from meddx.config import Settings
    from meddx.model.vocabulary import parse_labels
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache

    settings = with_device(Settings.from_env(), args)
    data = load_data(args.data)
    labels = parse_labels(args.labels)
    if labels:
        data = data.select(labels)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or settings.embedding_cache_dir)
    if args.ray_address:
        if cache is None:
            raise InputError("--ray-address fills the embedding cache; it cannot be used with --no-cache.")
        from dataclasses import replace

        from meddx.batch.embed import prefill
        from meddx.batch.engine import Engine

        address = None if args.ray_address == "local" else args.ray_address
        for model in [args.model] if models is None else models:
            counts = prefill(
                data,
                replace(settings, model=model or settings.model),
                cache,
                Engine(ray_address=address, workers=args.workers),
            )
            for message in counts.get("messages", []):
                print(f"meddx: {message}", file=sys.stderr)
            print(
                f"meddx: embedded on Ray: {counts['embedded']} new, {counts['cached_before']} already "
                f"cached, {counts['errors']} errors",
                file=sys.stderr,
            )
    return settings, data, cache


def print_rows(header: list[str], rows: list[list[object]]) -> None:
    """A left-aligned plain-text table: floats with 3 decimals, None as "-"."""

    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [header, *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def interval_text(interval: list[float]) -> str:
    """``low to high`` with 3 decimals."""
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


def write_json(path: str | Path, content: dict) -> Path:
    """Write ``content`` as indented JSON (no NaN), creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
