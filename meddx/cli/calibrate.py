"""``calibrate``: calibrate the zero-shot scores and choose an operating threshold per finding on labelled
films.

    python -m meddx calibrate --data SPEC --out DIR [--sensitivity 0.9] [--min-positives 20] [--model SPEC]

`meddx.train.calibrate` measures; the folder is loaded with ``MEDDX_CALIBRATION`` (`meddx.model.calibration`).
Errors meant for people print one line on stderr: exit 2 for bad input, 3 when a model cannot be used.
"""

from __future__ import annotations

import argparse

from meddx.cli.labelled import add_data_options, fail, interval_text, load_labelled, print_rows
from meddx.errors import InputError, MeddxError


def _calibrate_parser() -> argparse.ArgumentParser:
    from meddx.train.calibrate import DEFAULT_SENSITIVITY
    from meddx.train.fit import MIN_RELIABLE_POSITIVES

    parser = argparse.ArgumentParser(
        prog="python -m meddx calibrate",
        description="Calibrate the zero-shot scores and choose an operating threshold per finding on "
        "labelled films (the numbers hold for this data and this model revision only).",
    )
    add_data_options(parser)
    parser.add_argument("--out", required=True, help="folder to write the calibration into")
    parser.add_argument(
        "--sensitivity",
        type=float,
        default=DEFAULT_SENSITIVITY,
        help=f"target sensitivity of each threshold (default {DEFAULT_SENSITIVITY:g})",
    )
    parser.add_argument(
        "--min-positives",
        type=int,
        default=MIN_RELIABLE_POSITIVES,
        help=f"fewest positive images to choose a threshold from (default {MIN_RELIABLE_POSITIVES}); "
        "findings with fewer get none and are never flagged",
    )
    return parser


def run_calibrate(argv: list[str]) -> int:
    """Run ``calibrate`` with the arguments after the sub-command; returns the exit status."""
    args = _calibrate_parser().parse_args(argv)
    try:
        return _calibrate(args)
    except MeddxError as exc:
        return fail("calibrate", exc)


def _calibrate(args: argparse.Namespace) -> int:
    from meddx.model.calibration import save_calibration
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.zero_shot import text_directions
    from meddx.train.calibrate import fit_calibration
    from meddx.train.embedding_cache import embed_sources

    if not 0 < args.sensitivity < 1:
        raise InputError("--sensitivity must be between 0 and 1, e.g. 0.9.")
    if args.min_positives < 1:
        raise InputError("--min-positives must be at least 1.")
    settings, data, cache = load_labelled(args)
    encoder = load_encoder(args.model or settings.model, threads=settings.threads)
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    directions = text_directions(encoder, list(data.findings), cache_dir=settings.cache_dir)
    metadata = fit_calibration(
        embeddings,
        data,
        directions,
        identity=encoder_identity(encoder),
        sensitivity=args.sensitivity,
        min_positives=args.min_positives,
    )
    folder = save_calibration(metadata, args.out)
    print(
        f"Calibrated {len(data.findings)} finding(s) on {len(data)} images of {encoder_identity(encoder)}; "
        f"thresholds for sensitivity {args.sensitivity:g}, measured on this data only (optimistic):"
    )
    findings = metadata["findings"]
    print_rows(
        ["finding", "pos", "neg", "threshold", "sens", "95% CI", "spec", "95% CI", "AUROC", "ECE raw", "ECE"],
        [
            [
                fid,
                e["positives"],
                e["negatives"],
                e["threshold"],
                e["sensitivity"],
                e["sensitivity_ci"] and interval_text(e["sensitivity_ci"]),
                e["specificity"],
                e["specificity_ci"] and interval_text(e["specificity_ci"]),
                e["auroc"],
                e["ece_before"],
                e["ece_after"],
            ]
            for fid, e in findings.items()
        ],
    )
    for fid, entry in findings.items():
        if entry["note"]:
            print(f"{fid}: {entry['note']}")
    print(f"Wrote {folder}. Use it with: MEDDX_CALIBRATION=local-dir:{folder}")
    return 0


__all__ = ["run_calibrate"]
