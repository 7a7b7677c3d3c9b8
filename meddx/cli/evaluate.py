"""``eval``: measure zero-shot, calibrated and fine-tuned scores on labelled films, for one model or several.

    python -m meddx eval --data SPEC [--model SPEC] [--probe SPEC] [--calibration SPEC] [--json OUT]
                         [--plot DIR]
    python -m meddx eval --data SPEC --model SPEC_A --model SPEC_B [...] [--probe SPEC_A_HEAD|none ...]
                         [--calibration SPEC_A_CAL|none ...] [--json OUT] [--plot DIR]

For each model, per finding: zero-shot, (with ``--calibration``) calibrated zero-shot, and (with ``--probe``)
fine-tuned and combined ("both") AUROC, AUPRC, sensitivity, specificity and F1 at the operating threshold,
and ECE (`meddx.train.metrics.ECE_RULE`), with bootstrap 95 % intervals. Zero-shot uses the vocabulary's
default thresholds; a calibration and a head use their own. A finding with fewer than
`meddx.train.sample_size.MIN_PER_CLASS_FOR_INTERVALS` positive or negative images gets "too few (n positives,
m negatives)" instead of numbers that would look exact.

With several ``--model``, the same films are scored by each model and the models are compared on AUROC,
finding by finding: each model's *served* score (`served_mode`: what the app would show with that model,
head and calibration), every pair's difference with a paired-bootstrap 95 % interval on the same resamples
(`meddx.train.paired`), and which differences are significant (the interval excludes 0). Heads and
calibrations pair with models by position: give ``--probe`` (and ``--calibration``) either not at all or once
per ``--model``, in the same order, ``none`` for a model without one; each is refused for any model other
than the one (and the revision) it was made on. ``$MEDDX_PROBE`` applies to a single model only.

``--json`` writes the numbers, ``--plot`` PNGs (matplotlib's Agg backend): for one model, ROC and reliability
per finding with a line per mode; for several, ROC per finding with a line per model. Errors meant for people
print one line on stderr: exit 2 for bad input, 3 when a model, head or calibration cannot be used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meddx import __version__
from meddx.cli.common import with_device
from meddx.cli.eval_report import plot_models, plot_modes, print_comparison, print_eval
from meddx.cli.labelled import add_data_options, fail, load_labelled, need_train_extra, write_json
from meddx.errors import InputError, MeddxError, ModelError

NONE = "none"
THRESHOLDS = (
    "zero-shot: the vocabulary's default per finding; calibrated: the calibration's own (none: no "
    "sensitivity or specificity); fine-tuned and both: the head's own"
)
INTERVALS = (
    "sensitivity and specificity: Wilson score intervals (a bootstrap of a proportion of 0 or 1 collapses to "
    "that point); the other metrics: the bootstrap"
)
SERVED_RULE = (
    "each model's served score per finding: the head's 'both' score where a head scores the finding (the "
    "app's default mode with a head), else the calibrated score where a calibration covers it, else the "
    "zero-shot score"
)


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meddx eval",
        description="Measure zero-shot, calibrated and fine-tuned scores on labelled films; with several "
        "--model, compare the models on the same films.",
    )
    add_data_options(parser, models=True)
    parser.add_argument(
        "--probe",
        action="append",
        help="trained head spec, or 'none'; with several --model, once per --model in the same order "
        "(default: $MEDDX_PROBE for a single model; none: zero-shot only)",
    )
    parser.add_argument(
        "--calibration",
        action="append",
        help="zero-shot calibration folder (written by calibrate), or 'none'; with several --model, once per "
        "--model in the same order",
    )
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON to this file")
    parser.add_argument("--plot", metavar="DIR", help="write ROC (and reliability) plots (PNG) into DIR")
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


def run_eval(argv: list[str]) -> int:
    """Run ``eval`` with the arguments after the sub-command; returns the exit status."""
    args = _eval_parser().parse_args(argv)
    try:
        need_train_extra()
        return _eval(args)
    except MeddxError as exc:
        return fail("eval", exc)


@dataclass(frozen=True)
class Setup:
    """One model to measure, with the head and calibration paired with it (None: without)."""

    model: str
    probe: str | None
    calibration: str | None


def pair_setups(
    models: list[str] | None, probes: list[str] | None, calibrations: list[str] | None, settings
) -> list[Setup]:
    """Pair ``--probe`` and ``--calibration`` with ``--model`` by position (`Setup` per model).

    Raises:
        InputError: a list's length is neither 0 nor the number of models.
    """
    models = models or [settings.model]

    def paired(values: list[str] | None, option: str, default: str | None) -> list[str | None]:
        if not values:
            return [default] * len(models)
        if len(values) != len(models):
            raise InputError(
                f"{len(models)} --model but {len(values)} {option}: give {option} once per --model, in the "
                f"same order, with '{NONE}' for a model without one."
            )
        return [None if value.strip().lower() == NONE else value for value in values]

    if len(models) > 1 and not probes and settings.probe:
        print(
            "meddx eval: $MEDDX_PROBE is not used when comparing models; pair a head with its model with "
            "--probe.",
            file=sys.stderr,
        )
    default_probe = settings.probe if len(models) == 1 else None
    return [
        Setup(model, probe, calibration)
        for model, probe, calibration in zip(
            models,
            paired(probes, "--probe", default_probe),
            paired(calibrations, "--calibration", None),
            strict=True,
        )
    ]


def served_mode(scores: dict[str, np.ndarray]) -> str:
    """The mode the app serves for a finding with these scores (`SERVED_RULE`)."""
    return "both" if "both" in scores else "calibrated" if "calibrated" in scores else "zero-shot"


def _metrics(targets, probabilities, threshold, *, resamples, seed, enough, uncalibrated=None) -> dict:
    """`finding_metrics` with its 95 % intervals (``ci``; None unless ``enough``; `INTERVALS`); a None
    threshold gives no sensitivity, specificity or F1."""
    from meddx.train.calibrate import wilson_interval
    from meddx.train.metrics import bootstrap_intervals, finding_metrics

    cut = 0.5 if threshold is None else threshold
    metrics = finding_metrics(targets, probabilities, cut, uncalibrated=uncalibrated)
    metrics["ci"] = None
    if enough:
        metrics["ci"] = bootstrap_intervals(targets, probabilities, cut, resamples=resamples, seed=seed)
        y, flagged = np.asarray(targets, bool), np.asarray(probabilities) >= cut
        metrics["ci"]["sensitivity"] = wilson_interval(int((flagged & y).sum()), int(y.sum()))
        metrics["ci"]["specificity"] = wilson_interval(int((~flagged & ~y).sum()), int((~y).sum()))
    if threshold is None:
        for name in ("threshold", "sensitivity", "specificity", "f1"):
            metrics[name] = None
            if metrics["ci"] is not None:
                metrics["ci"][name] = None
    return metrics


def measure(
    data,
    embeddings: torch.Tensor,
    directions,
    head,
    calibration=None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Metrics per finding and mode (with bootstrap 95 % intervals, ``ci``), and the scores behind them.

    A finding with too few positive or negative images (`meddx.train.sample_size.too_few`) gets its point
    values, no intervals (``ci`` None) and a ``too_few`` entry saying how many it had.
    """
    from meddx.model.head import combine
    from meddx.train.sample_size import too_few

    zero_shot = torch.sigmoid(directions.logits(embeddings)).double().numpy()
    findings, curves = {}, {}
    for column, finding in enumerate(data.findings):
        targets = data.targets[:, column]
        positives = int(np.asarray(targets, bool).sum())
        few = too_few(positives, len(targets) - positives)
        options = {"resamples": resamples, "seed": seed, "enough": few is None}
        scores = {"zero-shot": zero_shot[:, column]}
        results = {"zero-shot": _metrics(targets, scores["zero-shot"], finding.threshold, **options)}
        if calibration is not None and calibration.covers(finding):
            scores["calibrated"] = np.array(
                [calibration.probability(finding.id, p) for p in zero_shot[:, column]]
            )
            cut = calibration.threshold(finding.id)
            results["calibrated"] = _metrics(targets, scores["calibrated"], cut, **options)
        if head is not None and finding.id in head.finding_ids:
            index = head.finding_ids.index(finding.id)
            calibrated = head.probabilities(embeddings)[:, index].double().numpy()
            raw = head.probabilities(embeddings, calibrated=False)[:, index].double().numpy()
            scores["fine-tuned"] = calibrated
            scores["both"] = combine(scores["zero-shot"], calibrated, "both")
            scores["fine-tuned (uncalibrated)"] = raw
            results["fine-tuned"] = _metrics(
                targets, calibrated, head.threshold(finding.id, "fine-tuned"), uncalibrated=raw, **options
            )
            results["both"] = _metrics(targets, scores["both"], head.threshold(finding.id, "both"), **options)
        findings[finding.id] = {"label": finding.name, **results}
        if few is not None:
            findings[finding.id]["too_few"] = few
        curves[finding.id] = (finding.name, targets, scores)
    return findings, curves


def _score(setup: Setup, data, cache, settings, args, *, number: int, several: bool) -> tuple[dict, dict]:
    """One model's report entry (model, probe, calibration, findings) and its curves."""
    from meddx.model.calibration import read_calibration
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.head_store import load_head
    from meddx.model.zero_shot import text_directions
    from meddx.train.embedding_cache import embed_sources

    head = load_head(setup.probe) if setup.probe else None
    calibration = read_calibration(setup.calibration) if setup.calibration else None
    encoder = load_encoder(setup.model, threads=settings.threads, device=settings.device)
    for option, tied in (("--probe", head), ("--calibration", calibration)):
        try:
            if tied is not None:
                tied.check_encoder(encoder)
        except ModelError as exc:
            if not several:
                raise
            raise ModelError(
                f"{option} number {number} is paired with --model number {number} ({setup.model}; pairs go "
                f"by position), and does not fit it: {exc}"
            ) from exc
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    directions = text_directions(encoder, list(data.findings), cache_dir=settings.cache_dir)
    findings, curves = measure(
        data, embeddings, directions, head, calibration, resamples=args.resamples, seed=args.seed
    )
    if head is not None and not set(head.finding_ids) & set(data.labels):
        print(
            f"meddx eval: the head {setup.probe} scores none of the data's labels; only zero-shot was "
            "measured.",
            file=sys.stderr,
        )
    entry = {
        "model": encoder_identity(encoder).to_dict(),
        "probe": None
        if head is None
        else {"spec": head.source, "revision": head.revision, "findings": list(head.finding_ids)},
        "calibration": None
        if calibration is None
        else {"spec": calibration.source, "findings": list(calibration.finding_ids)},
        "findings": findings,
    }
    return entry, curves


def compare(data, entries: list[dict], curves: list[dict], *, resamples: int, seed: int) -> dict:
    """The models' served AUROC per finding and every pair's paired difference (`meddx.train.paired`)."""
    from meddx.train.metrics import auroc
    from meddx.train.paired import PAIRED_RULE, paired_auroc, resample_indices
    from meddx.train.sample_size import too_few

    samples = resample_indices(len(data), resamples, seed)
    tags = [str(number) for number in range(1, len(entries) + 1)]
    pairs = [(a, b) for i, a in enumerate(tags) for b in tags[i + 1 :]]
    findings = {}
    for column, finding in enumerate(data.findings):
        targets = np.asarray(data.targets[:, column], bool)
        positives, negatives = int(targets.sum()), int((~targets).sum())
        modes = {tag: served_mode(model[finding.id][2]) for tag, model in zip(tags, curves, strict=True)}
        scores = {tag: model[finding.id][2][modes[tag]] for tag, model in zip(tags, curves, strict=True)}
        entry = {"label": finding.name, "positives": positives, "negatives": negatives, "modes": modes}
        few = too_few(positives, negatives)
        if few is not None:
            point = {tag: auroc(targets, values) for tag, values in scores.items()}
            entry |= {
                "too_few": few,
                "auroc": {t: None if v is None else round(v, 4) for t, v in point.items()},
            }
        else:
            paired = paired_auroc(targets, scores, samples, pairs)
            entry |= {
                "auroc": paired["auroc"],
                "ci": paired["ci"],
                "differences": [
                    {"first": first, "second": second, **paired["differences"][(first, second)]}
                    for first, second in pairs
                ],
            }
        findings[finding.id] = entry
    return {
        "score": SERVED_RULE,
        "rule": f"{PAIRED_RULE}; {resamples} resamples, seed {seed}",
        "multiple_comparisons": "intervals are per finding and per pair, not adjusted for how many are shown",
        "findings": findings,
    }


def _eval(args: argparse.Namespace) -> int:
    from meddx.config import Settings
    from meddx.train.metrics import BOOTSTRAP_RULE, ECE_RULE

    if args.resamples < 100:
        raise InputError("--resamples must be at least 100.")
    setups = pair_setups(args.model, args.probe, args.calibration, with_device(Settings.from_env(), args))
    settings, data, cache = load_labelled(args, [setup.model for setup in setups])
    scored = []
    for number, setup in enumerate(setups, start=1):
        scored.append(_score(setup, data, cache, settings, args, number=number, several=len(setups) > 1))
        if len(setups) > 1:
            from meddx.model.encoder import clear_cache

            clear_cache()  # one model in memory at a time: the peak is the largest model, not the sum
    common = {
        "ece_rule": ECE_RULE,
        "interval_rule": f"{BOOTSTRAP_RULE}; {args.resamples} resamples, seed {args.seed}; {INTERVALS}",
        "thresholds": THRESHOLDS,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "meddx_version": __version__,
    }
    described = {"description": data.description, "images": len(data), "counts": data.counts()}
    if len(scored) == 1:
        report = {"data": described, **scored[0][0], **common}
        print_eval(report)
    else:
        comparison = compare(
            data, [e for e, _ in scored], [c for _, c in scored], resamples=args.resamples, seed=args.seed
        )
        report = {"data": described, "models": [e for e, _ in scored], "comparison": comparison, **common}
        print_comparison(report)
    if args.json:
        print(f"Wrote {write_json(args.json, report)}")
    if args.plot:
        if len(scored) == 1:
            written = plot_modes(scored[0][1], Path(args.plot))
        else:
            written = plot_models([c for _, c in scored], report, Path(args.plot))
        print(f"Wrote {len(written)} plots to {args.plot}")
    return 0


__all__ = ["compare", "measure", "pair_setups", "run_eval", "served_mode"]
