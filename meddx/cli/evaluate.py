"""``eval``: measure zero-shot and fine-tuned scores on labelled films.

    python -m meddx eval --data SPEC [--model SPEC] [--probe SPEC] [--json OUT] [--plot DIR]

Prints, per finding, zero-shot and (with a head) fine-tuned and combined ("both") AUROC, AUPRC, sensitivity,
specificity and F1 at the operating threshold, and ECE (`meddx.train.fit.ECE_RULE`), writes them as JSON
(``--json``) and draws ROC and reliability plots (``--plot``, PNG, matplotlib's Agg backend). Zero-shot uses
the vocabulary's default thresholds; the head uses its own. Errors meant for people print one line on stderr:
exit 2 for bad input, 3 when a model or head cannot be used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import sys
from pathlib import Path

import torch

from meddx import __version__
from meddx.cli.labelled import (
    TRAIN_EXTRA_HINT,
    add_data_options,
    fail,
    load_labelled,
    need_train_extra,
    print_rows,
    write_json,
)
from meddx.errors import InputError, MeddxError
from meddx.model.modes import MODES


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meddx eval",
        description="Measure zero-shot and fine-tuned scores on labelled films.",
    )
    add_data_options(parser)
    parser.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE; none: zero-shot only)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON to this file")
    parser.add_argument("--plot", metavar="DIR", help="write ROC and reliability plots (PNG) into DIR")
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


def _measure(
    data, embeddings: torch.Tensor, directions, head, *, resamples: int = 1000, seed: int = 0
) -> tuple[dict, dict]:
    """Metrics per finding and mode (with bootstrap 95 % intervals, ``ci``), and the scores behind them."""
    from meddx.model.head import combine
    from meddx.train.fit import bootstrap_intervals, finding_metrics

    zero_shot = torch.sigmoid(directions.logits(embeddings)).double().numpy()
    findings, curves = {}, {}
    for column, finding in enumerate(data.findings):
        targets = data.targets[:, column]
        scores = {"zero-shot": zero_shot[:, column]}
        results = {"zero-shot": finding_metrics(targets, scores["zero-shot"], finding.threshold)}
        if head is not None and finding.id in head.finding_ids:
            index = head.finding_ids.index(finding.id)
            calibrated = head.probabilities(embeddings)[:, index].double().numpy()
            raw = head.probabilities(embeddings, calibrated=False)[:, index].double().numpy()
            scores["fine-tuned"] = calibrated
            scores["both"] = combine(scores["zero-shot"], calibrated, "both")
            scores["fine-tuned (uncalibrated)"] = raw
            results["fine-tuned"] = finding_metrics(
                targets, calibrated, head.threshold(finding.id, "fine-tuned"), uncalibrated=raw
            )
            results["both"] = finding_metrics(targets, scores["both"], head.threshold(finding.id, "both"))
        for mode, metrics in results.items():
            metrics["ci"] = bootstrap_intervals(
                targets, scores[mode], metrics["threshold"], resamples=resamples, seed=seed
            )
        findings[finding.id] = {"label": finding.name, **results}
        curves[finding.id] = (finding.name, targets, scores)
    return findings, curves


def _eval(args: argparse.Namespace) -> int:
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.head_store import load_head
    from meddx.model.zero_shot import text_directions
    from meddx.train.embedding_cache import embed_sources
    from meddx.train.fit import BOOTSTRAP_RULE, ECE_RULE

    settings, data, cache = load_labelled(args)
    probe = args.probe or settings.probe
    head = load_head(probe) if probe else None
    encoder = load_encoder(args.model or settings.model, threads=settings.threads)
    if head is not None:
        head.check_encoder(encoder)
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    if args.resamples < 100:
        raise InputError("--resamples must be at least 100.")
    directions = text_directions(encoder, list(data.findings), cache_dir=settings.cache_dir)
    findings, curves = _measure(data, embeddings, directions, head, resamples=args.resamples, seed=args.seed)
    if head is not None and not set(head.finding_ids) & set(data.labels):
        print(
            "meddx eval: the head scores none of the data's labels; only zero-shot was measured.",
            file=sys.stderr,
        )
    report = {
        "data": {"description": data.description, "images": len(data), "counts": data.counts()},
        "model": encoder_identity(encoder).to_dict(),
        "probe": None
        if head is None
        else {"spec": head.source, "revision": head.revision, "findings": list(head.finding_ids)},
        "ece_rule": ECE_RULE,
        "interval_rule": f"{BOOTSTRAP_RULE}; {args.resamples} resamples, seed {args.seed}",
        "thresholds": "zero-shot: the vocabulary's default per finding; fine-tuned and both: the head's own",
        "findings": findings,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "meddx_version": __version__,
    }
    _print_eval(report)
    if args.json:
        print(f"Wrote {write_json(args.json, report)}")
    if args.plot:
        written = _plot(curves, Path(args.plot))
        print(f"Wrote {len(written)} plots to {args.plot}")
    return 0


EVAL_COLUMNS = ("auroc", "auprc", "sensitivity", "specificity", "f1", "ece")


def _with_ci(value: float | None, interval: list[float] | None) -> str | None:
    if value is None:
        return None
    return f"{value:.3f}" if interval is None else f"{value:.3f} ({interval[0]:.2f}-{interval[1]:.2f})"


def _print_eval(report: dict) -> None:
    model = report["model"]
    print(f"{report['data']['images']} images; model {model['spec']} @ {model['revision']}")
    rows = []
    for fid, result in report["findings"].items():
        for mode in MODES:
            if mode in result:
                m = result[mode]
                row = [
                    fid if mode == "zero-shot" else "",
                    mode,
                    m["positives"],
                    m["negatives"],
                    m["threshold"],
                ]
                rows.append(
                    row + [_with_ci(m[k], m["ci"][k]) for k in EVAL_COLUMNS] + [m.get("ece_uncalibrated")]
                )
    header = ["finding", "mode", "pos", "neg", "threshold", "AUROC", "AUPRC", "sens", "spec", "F1", "ECE"]
    print_rows([*header, "ECE raw"], rows)
    print(f"In brackets: {report['interval_rule']}.")


def _axes(title: str, xlabel: str, ylabel: str):
    """A square Agg figure with a diagonal reference line; returns (figure, axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1))
    return figure, axes


def _plot(curves: dict, folder: Path) -> list[Path]:
    """``roc_<finding>.png`` and ``reliability_<finding>.png`` per finding with both classes; the paths."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(f"--plot needs matplotlib: {TRAIN_EXTRA_HINT}.")
    from meddx.train.fit import auroc, reliability, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fid, (name, targets, scores) in curves.items():
        if not 0 < int(targets.sum()) < len(targets):
            continue
        figure, axes = _axes(f"ROC: {name}", "1 - specificity", "sensitivity")
        for mode in MODES:
            if mode in scores:
                fpr, tpr = roc_curve(targets, scores[mode])
                style = ":" if mode == "both" else "-"  # "both" often overlays "fine-tuned"
                axes.plot(fpr, tpr, style, label=f"{mode} (AUROC {auroc(targets, scores[mode]):.3f})")
        axes.legend(loc="lower right", fontsize="small")
        written.append(folder / f"roc_{fid}.png")
        figure.savefig(written[-1], dpi=100, bbox_inches="tight")

        figure, axes = _axes(
            f"Reliability: {name}", "mean predicted probability (10 bins)", "fraction positive"
        )
        for mode in ("zero-shot", "fine-tuned (uncalibrated)", "fine-tuned"):
            if mode in scores:
                counts, predicted, observed = reliability(targets, scores[mode])
                axes.plot(predicted[counts > 0], observed[counts > 0], marker="o", label=mode)
        axes.legend(loc="upper left", fontsize="small")
        written.append(folder / f"reliability_{fid}.png")
        figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    return written


__all__ = ["run_eval"]
