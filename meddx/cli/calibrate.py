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
    from meddx.train.sample_size import MIN_PER_CLASS_FOR_CALIBRATION as MINIMUM

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
        default=MINIMUM,
        help=f"fewest positive images to calibrate a finding and choose its threshold (default {MINIMUM}); "
        "findings with fewer are not calibrated: they keep the uncalibrated score and are never flagged",
    )
    parser.add_argument(
        "--min-negatives",
        type=int,
        default=MINIMUM,
        help=f"fewest negative images to calibrate a finding (default {MINIMUM}); likewise",
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
    from meddx.train.sample_size import counted

    if not 0 < args.sensitivity < 1:
        raise InputError("--sensitivity must be between 0 and 1, e.g. 0.9.")
    if args.min_positives < 1 or args.min_negatives < 1:
        raise InputError("--min-positives and --min-negatives must be at least 1.")
    settings, data, cache = load_labelled(args)
    counts = {fid: (c["positive"], c["negative"]) for fid, c in data.counts().items()}
    if all(p < args.min_positives or n < args.min_negatives for p, n in counts.values()):
        raise InputError(
            "No finding has enough labelled images to calibrate ("
            + "; ".join(f"{fid}: {counted(p, n)}" for fid, (p, n) in counts.items())
            + f"); each needs at least {args.min_positives} positive and {args.min_negatives} negative "
            "images. Nothing was written."
        )
    encoder = load_encoder(args.model or settings.model, threads=settings.threads, device=settings.device)
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    directions = text_directions(encoder, list(data.findings), cache_dir=settings.cache_dir)
    metadata = fit_calibration(
        embeddings,
        data,
        directions,
        identity=encoder_identity(encoder),
        sensitivity=args.sensitivity,
        min_positives=args.min_positives,
        min_negatives=args.min_negatives,
    )
    findings = metadata["findings"]
    calibrated = [fid for fid, entry in findings.items() if entry["scale"] is not None]
    folder = save_calibration(metadata, args.out)
    print(
        f"Calibrated {len(calibrated)} of {len(findings)} finding(s) on {len(data)} images of "
        f"{encoder_identity(encoder)}; thresholds for sensitivity {args.sensitivity:g}, measured on this "
        "data only (optimistic):"
    )
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
