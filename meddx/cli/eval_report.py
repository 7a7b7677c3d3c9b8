"""What ``eval`` prints and draws (`meddx.cli.evaluate` measures): a table per model, the models' comparison,
and ROC and reliability plots (matplotlib's Agg backend, PNG).

A finding with too few positive or negative images (`meddx.train.sample_size`) is left out of the tables and
named below them, with its counts, instead of numbers and intervals that would look exact.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from meddx.cli.labelled import TRAIN_EXTRA_HINT, print_rows
from meddx.errors import InputError

EVAL_COLUMNS = ("auroc", "auprc", "sensitivity", "specificity", "f1", "ece")
EVAL_MODES = ("zero-shot", "calibrated", "fine-tuned", "both")
"""The rows of a model's table, in order: `meddx.model.modes.MODES` plus a calibrated zero-shot score."""


def _with_ci(value: float | None, interval: list[float] | None) -> str | None:
    if value is None:
        return None
    return f"{value:.3f}" if interval is None else f"{value:.3f} ({interval[0]:.2f}-{interval[1]:.2f})"


def _too_few_lines(findings: dict) -> None:
    from meddx.train.sample_size import MIN_PER_CLASS_FOR_INTERVALS

    for fid, result in findings.items():
        if result.get("too_few"):
            print(
                f"{fid}: {result['too_few']}: no metrics or intervals are shown; at least "
                f"{MIN_PER_CLASS_FOR_INTERVALS} positive and {MIN_PER_CLASS_FOR_INTERVALS} negative images "
                "are needed."
            )


def _model_table(findings: dict) -> None:
    rows = []
    for fid, result in findings.items():
        if result.get("too_few"):
            continue
        first = True
        for mode in EVAL_MODES:
            if mode in result:
                m = result[mode]
                row = [fid if first else "", mode, m["positives"], m["negatives"], m["threshold"]]
                rows.append(
                    row + [_with_ci(m[k], m["ci"][k]) for k in EVAL_COLUMNS] + [m.get("ece_uncalibrated")]
                )
                first = False
    header = ["finding", "mode", "pos", "neg", "threshold", "AUROC", "AUPRC", "sens", "spec", "F1", "ECE"]
    if rows:
        print_rows([*header, "ECE raw"], rows)
    _too_few_lines(findings)


def _model_line(entry: dict) -> str:
    model = entry["model"]
    extras = [f"head {entry['probe']['spec']}"] if entry.get("probe") else []
    extras += [f"calibration {entry['calibration']['spec']}"] if entry.get("calibration") else []
    return f"model {model['spec']} @ {model['revision']}" + (f" ({'; '.join(extras)})" if extras else "")


def print_eval(report: dict) -> None:
    """One model: the images, the model, a row per finding and mode with 95 % intervals."""
    print(f"{report['data']['images']} images; {_model_line(report)}")
    _model_table(report["findings"])
    print(f"In brackets: {report['interval_rule']}.")


def print_comparison(report: dict) -> None:
    """Several models: each model's table, then AUROC of each served score and the paired differences."""
    print(f"{report['data']['images']} images, scored by {len(report['models'])} models:")
    for number, entry in enumerate(report["models"], start=1):
        print(f"\n[{number}] {_model_line(entry)}")
        _model_table(entry["findings"])
    comparison = report["comparison"]
    findings = {fid: c for fid, c in comparison["findings"].items() if not c.get("too_few")}
    tags = [str(number) for number in range(1, len(report["models"]) + 1)]
    print(f"\nComparison on the same {report['data']['images']} images ({comparison['score']}):")
    if findings:
        print_rows(
            ["finding", "pos", "neg", *[f"[{t}] AUROC (95% CI)" for t in tags]],
            [
                [fid, c["positives"], c["negatives"]]
                + [f"{_with_ci(c['auroc'][t], c['ci'][t])} {c['modes'][t]}" for t in tags]
                for fid, c in findings.items()
            ],
        )
        print()
        print_rows(
            ["finding", "difference", "AUROC difference (95% CI)", "significant"],
            [
                [
                    fid,
                    f"[{d['first']}] - [{d['second']}]",
                    f"{d['auroc']:+.3f} ({d['ci'][0]:+.3f} to {d['ci'][1]:+.3f})",
                    _verdict(d),
                ]
                for fid, c in findings.items()
                for d in c["differences"]
            ],
        )
    _too_few_lines(comparison["findings"])
    print(f"Intervals: {comparison['rule']}; {comparison['multiple_comparisons']}.")


def _verdict(difference: dict) -> str:
    if not difference["significant"]:
        return "no (the interval includes 0)"
    higher = difference["first"] if difference["auroc"] > 0 else difference["second"]
    return f"yes: [{higher}] higher"


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


def _need_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(f"--plot needs matplotlib: {TRAIN_EXTRA_HINT}.")


def plot_modes(curves: dict, folder: Path) -> list[Path]:
    """``roc_<finding>.png`` and ``reliability_<finding>.png`` per finding with both classes; the paths."""
    _need_matplotlib()
    from meddx.train.metrics import auroc, reliability, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fid, (name, targets, scores) in curves.items():
        if not 0 < int(targets.sum()) < len(targets):
            continue
        figure, axes = _axes(f"ROC: {name}", "1 - specificity", "sensitivity")
        for mode in EVAL_MODES:
            if mode in scores:
                fpr, tpr = roc_curve(targets, scores[mode])
                style = ":" if mode in ("both", "calibrated") else "-"  # they often overlay another line
                axes.plot(fpr, tpr, style, label=f"{mode} (AUROC {auroc(targets, scores[mode]):.3f})")
        axes.legend(loc="lower right", fontsize="small")
        written.append(folder / f"roc_{fid}.png")
        figure.savefig(written[-1], dpi=100, bbox_inches="tight")

        figure, axes = _axes(
            f"Reliability: {name}", "mean predicted probability (10 bins)", "fraction positive"
        )
        for mode in ("zero-shot", "calibrated", "fine-tuned (uncalibrated)", "fine-tuned"):
            if mode in scores:
                counts, predicted, observed = reliability(targets, scores[mode])
                axes.plot(predicted[counts > 0], observed[counts > 0], marker="o", label=mode)
        axes.legend(loc="upper left", fontsize="small")
        written.append(folder / f"reliability_{fid}.png")
        figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    return written


def plot_models(curves: list[dict], report: dict, folder: Path) -> list[Path]:
    """``roc_<finding>.png`` per finding with both classes: one line per model (its served score)."""
    _need_matplotlib()
    from meddx.train.metrics import auroc, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fid, comparison in report["comparison"]["findings"].items():
        name, targets, _ = curves[0][fid]
        if not 0 < int(targets.sum()) < len(targets):
            continue
        title = f"ROC: {name}"
        if comparison.get("too_few"):
            title += f"\n{comparison['too_few']}"
        figure, axes = _axes(title, "1 - specificity", "sensitivity")
        for number, (model, entry) in enumerate(zip(curves, report["models"], strict=True), start=1):
            mode = comparison["modes"][str(number)]
            scores = model[fid][2][mode]
            fpr, tpr = roc_curve(targets, scores)
            label = f"[{number}] {entry['model']['model']}, {mode} (AUROC {auroc(targets, scores):.3f})"
            axes.plot(fpr, tpr, label=label)
        axes.legend(loc="lower right", fontsize="small")
        written.append(folder / f"roc_{fid}.png")
        figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    return written


__all__ = ["EVAL_MODES", "plot_models", "plot_modes", "print_comparison", "print_eval"]
