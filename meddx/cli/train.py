"""``train``: fit a head on labelled films and clinician feedback (`meddx.train.fit`).

    python -m meddx train --data SPEC --out DIR [--labels a,b] [--model SPEC] [--epochs N] [--seed S]
                          [--push-to-hub owner/name]

``--data`` may be repeated and may name clinician feedback (``feedback:DIR``, ``hf-dataset:owner/name``;
`meddx.train.training_set`); otherwise it is an image folder, a CSV or JSONL file, or ``hf:org/name``
(`meddx.train.datasets`; the format is in docs/evaluation.md). Embeddings are cached under
``~/.cache/meddx/embeddings`` (``--cache-dir``, ``--no-cache``). ``train`` writes the head folder
(`meddx.model.head`) and prints validation metrics. Errors meant for people print one line on stderr: exit 2
for bad input, 3 when a model cannot be used.

The other commands on labelled films have their own modules: ``eval`` (`meddx.cli.evaluate`), ``promote``
(`meddx.cli.promote`) and ``calibrate`` (`meddx.cli.calibrate`); their entry points are importable from here
too.
"""

from __future__ import annotations

import argparse
import re
import sys

from meddx.cli.calibrate import run_calibrate
from meddx.cli.common import with_device
from meddx.cli.evaluate import run_eval
from meddx.cli.labelled import add_data_options, fail, need_train_extra, print_rows
from meddx.cli.promote import run_promote
from meddx.errors import InputError, MeddxError


def _train_parser() -> argparse.ArgumentParser:
    from meddx.train.fit import TrainingConfig

    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m meddx train",
        description="Train a calibrated linear head on frozen image embeddings (decision support only).",
    )
    add_data_options(parser, feedback=True)
    parser.add_argument("--out", required=True, help="folder to write the head into")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="most epochs (early stopping)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="split and shuffling seed")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="share of images held out for early stopping, calibration and thresholds",
    )
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the head to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    return parser


def run_train(argv: list[str]) -> int:
    """Run ``train`` with the arguments after the sub-command; returns the exit status."""
    args = _train_parser().parse_args(argv)
    try:
        need_train_extra()
        return _train(args)
    except MeddxError as exc:
        return fail("train", exc)


def _train(args: argparse.Namespace) -> int:
    from meddx.config import Settings
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.head_store import publish_head, save_head
    from meddx.model.vocabulary import parse_labels
    from meddx.model.zero_shot import text_directions
    from meddx.train.embedding_cache import EmbeddingCache
    from meddx.train.fit import MIN_RELIABLE_POSITIVES, TrainingConfig, fit_head
    from meddx.train.training_set import build_training_set, read_sources

    if args.push_to_hub and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.push_to_hub):
        raise InputError(f"--push-to-hub needs OWNER/NAME, got {args.push_to_hub!r}.")
    if args.epochs < 1:
        raise InputError("--epochs must be at least 1.")
    if not 0 < args.validation_fraction < 1:
        raise InputError("--validation-fraction must be between 0 and 1.")
    settings = with_device(Settings.from_env(), args)
    sources = read_sources(args.data)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or settings.embedding_cache_dir)
    encoder = load_encoder(args.model or settings.model, threads=settings.threads, device=settings.device)
    config = TrainingConfig(
        epochs=args.epochs,
        seed=args.seed,
        learning_rate=args.learning_rate,
        validation_fraction=args.validation_fraction,
    )
    embeddings, data = build_training_set(
        encoder,
        sources,
        labels=parse_labels(args.labels),
        cache=cache,
        progress=True,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
    )
    for finding_id, reason in data.dropped.items():
        print(f"Left out {finding_id}: only feedback labels it, {reason} (too few to train on).")
    directions = text_directions(encoder, list(data.findings), cache_dir=settings.cache_dir)
    head = fit_head(embeddings, data, directions, identity=encoder_identity(encoder), config=config)
    folder = save_head(head, args.out)
    meta = head.metadata
    split = meta["data"]["split"]
    print(
        f"Trained a head for {len(head.finding_ids)} finding(s) on {len(data)} images ({split['train']} "
        f"train, {split['validation']} validation) of {head.encoder}; best epoch "
        f"{meta['training']['best_epoch']} of {meta['training']['epochs_run']}."
    )
    if data.feedback:
        print(f"Feedback: {data.feedback['records']} records; answers per finding:")
        print_rows(
            ["finding", "present", "absent", "not sure", "missed"],
            [[fid, *c.values()] for fid, c in data.feedback["counts"].items()],
        )
    print("Validation metrics (the split that chose epoch, calibration and thresholds: optimistic):")
    print_rows(
        ["finding", "pos", "neg", "zero-shot AUROC", "AUROC", "threshold", "sens", "spec", "ECE raw", "ECE"],
        [
            [fid, *(m[k] for k in ("positives", "negatives", "zero_shot_auroc", "auroc", "threshold"))]
            + [m[k] for k in ("sensitivity", "specificity", "ece_uncalibrated", "ece")]
            for fid, m in meta["validation"]["metrics"].items()
        ],
    )
    for fid, m in meta["validation"]["metrics"].items():
        if m["positives"] < MIN_RELIABLE_POSITIVES:
            print(
                f"meddx train: warning: the validation split has {m['positives']} positive image"
                f"{'s' if m['positives'] != 1 else ''} for {fid}, fewer than {MIN_RELIABLE_POSITIVES}: one "
                f"image moves its validation sensitivity by {100 / max(m['positives'], 1):.0f} points, so "
                "its calibration, threshold and metrics are noisy. Add positive images or raise "
                "--validation-fraction.",
                file=sys.stderr,
            )
    print(f"Wrote {folder}. Use it with: MEDDX_PROBE=local-dir:{folder}")
    if args.push_to_hub:
        url = publish_head(folder, args.push_to_hub, private=args.private or None)
        print(f"Published {url}. Use it with: MEDDX_PROBE=hf-hub:{args.push_to_hub}")
    return 0


__all__ = ["run_calibrate", "run_eval", "run_promote", "run_train"]
