"""``train``, ``eval`` and ``promote``: fit a head on labelled films and feedback, measure it, promote it.

    python -m meddx train --data SPEC --out DIR [--labels a,b] [--model SPEC] [--epochs N] [--seed S]
                          [--push-to-hub owner/name]
    python -m meddx eval  --data SPEC [--model SPEC] [--probe SPEC] [--json OUT] [--plot DIR]
    python -m meddx promote --candidate DIR --current DIR|hf-hub:owner/name --data HELD_OUT [--json OUT]
    python -m meddx calibrate --data SPEC --out DIR [--sensitivity 0.9] [--min-positives 20] [--model SPEC]

``train --data`` may be repeated and may name clinician feedback (``feedback:DIR``,
``hf-dataset:owner/name``; `meddx.train.training_set`). ``promote`` (`meddx.train.promote`) exits 0 when
the candidate replaced the current head and 1 when it was refused, with the reasons. ``calibrate``
(`meddx.train.calibrate`) measures a calibration of the zero-shot scores and an operating threshold per
finding, loaded with ``MEDDX_CALIBRATION`` (`meddx.model.calibration`).

``--data`` is an image folder, a CSV or JSONL file, or ``hf:org/name`` (`meddx.train.datasets`). Embeddings
are cached under ``~/.cache/meddx/embeddings`` (``--cache-dir``, ``--no-cache``). ``train`` writes the
head folder (`meddx.model.head`) and prints validation metrics; ``eval`` prints, per finding, zero-shot and
(with a head) fine-tuned and combined ("both") AUROC, AUPRC, sensitivity, specificity and F1 at the
operating threshold, and ECE (`meddx.train.fit.ECE_RULE`), writes them as JSON (``--json``) and draws
ROC and reliability plots (``--plot``, PNG, matplotlib's Agg backend). Zero-shot uses the vocabulary's
default thresholds; the head uses its own. Errors meant for people print one line on stderr: exit 2 for
bad input, 3 when a model or head cannot be used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import re
import sys
from pathlib import Path

import torch

from meddx import __version__
from meddx.errors import InputError, MeddxError, exit_status
from meddx.model.modes import MODES

# What `train` and `eval` need beyond requirements.txt (requirements-train.txt): import name -> package.
TRAIN_EXTRA = {"datasets": "datasets", "matplotlib": "matplotlib", "sklearn": "scikit-learn"}
TRAIN_EXTRA_HINT = 'pip install "meddx[train]" (or pip install -r requirements-train.txt)'


def _need_train_extra() -> None:
    missing = [package for name, package in TRAIN_EXTRA.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"needs the train extra ({', '.join(missing)} missing): {TRAIN_EXTRA_HINT}.")


def _common(parser: argparse.ArgumentParser, *, feedback: bool = False) -> None:
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


def _train_parser() -> argparse.ArgumentParser:
    from meddx.train.fit import TrainingConfig

    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m meddx train",
        description="Train a calibrated linear head on frozen image embeddings (decision support only).",
    )
    _common(parser, feedback=True)
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


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m meddx eval",
        description="Measure zero-shot and fine-tuned scores on labelled films.",
    )
    _common(parser)
    parser.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE; none: zero-shot only)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON to this file")
    parser.add_argument("--plot", metavar="DIR", help="write ROC and reliability plots (PNG) into DIR")
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


def _fail(command: str, exc: MeddxError) -> int:
    print(f"meddx {command}: {exc}", file=sys.stderr)
    return exit_status(exc)


def _load(args: argparse.Namespace):
    """Settings, data (restricted to --labels) and the embedding cache."""
    from meddx.config import Settings
    from meddx.model.vocabulary import parse_labels
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache

    settings = Settings.from_env()
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
        counts = prefill(
            data,
            replace(settings, model=args.model or settings.model),
            cache,
            Engine(ray_address=address, workers=args.workers),
        )
        for message in counts.get("messages", []):
            print(f"meddx: {message}", file=sys.stderr)
        print(
            f"meddx: embedded on Ray: {counts['embedded']} new, {counts['cached_before']} already cached, "
            f"{counts['errors']} errors",
            file=sys.stderr,
        )
    return settings, data, cache


def _print_rows(header: list[str], rows: list[list[object]]) -> None:
    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [header, *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# --- train ---------------------------------------------------------------------------------------------


def run_train(argv: list[str]) -> int:
    """Run ``train`` with the arguments after the sub-command; returns the exit status."""
    args = _train_parser().parse_args(argv)
    try:
        _need_train_extra()
        return _train(args)
    except MeddxError as exc:
        return _fail("train", exc)


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
    settings = Settings.from_env()
    sources = read_sources(args.data)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or settings.embedding_cache_dir)
    encoder = load_encoder(args.model or settings.model, threads=settings.threads)
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
        _print_rows(
            ["finding", "present", "absent", "not sure", "missed"],
            [[fid, *c.values()] for fid, c in data.feedback["counts"].items()],
        )
    print("Validation metrics (the split that chose epoch, calibration and thresholds: optimistic):")
    _print_rows(
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


# --- eval ----------------------------------------------------------------------------------------------


def run_eval(argv: list[str]) -> int:
    """Run ``eval`` with the arguments after the sub-command; returns the exit status."""
    args = _eval_parser().parse_args(argv)
    try:
        _need_train_extra()
        return _eval(args)
    except MeddxError as exc:
        return _fail("eval", exc)


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

    settings, data, cache = _load(args)
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
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"Wrote {path}")
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
    _print_rows([*header, "ECE raw"], rows)
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


# --- promote -------------------------------------------------------------------------------------------


def _promote_parser() -> argparse.ArgumentParser:
    from meddx.train.promote import RESAMPLES

    parser = argparse.ArgumentParser(
        prog="python -m meddx promote",
        description="Replace the current head with a candidate only if it measures better on held-out films.",
    )
    parser.add_argument("--candidate", required=True, help="the new head's folder (written by train --out)")
    parser.add_argument(
        "--current", required=True, help="the served head: a folder, local-dir:DIR or hf-hub:owner/name"
    )
    parser.add_argument("--data", required=True, help="held-out films: image folder, .csv, .jsonl or hf:...")
    parser.add_argument("--model", help="the image model (default: the one the candidate was trained on)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", metavar="OUT", help="write the decision and its numbers as JSON")
    parser.add_argument("--cache-dir", help="embedding cache folder (default $MEDDX_CACHE_DIR/embeddings)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")
    return parser


def run_promote(argv: list[str]) -> int:
    """Run ``promote``: exit 0 when promoted, 1 when refused (the reasons printed), 2/3 on errors."""
    args = _promote_parser().parse_args(argv)
    try:
        return _promote(args)
    except MeddxError as exc:
        return _fail("promote", exc)


def _head_spec(value: str) -> str:
    return value if value.startswith(("local-dir:", "hf-hub:")) else f"local-dir:{value}"


def _promote(args: argparse.Namespace) -> int:
    from meddx.config import Settings
    from meddx.model.encoder import load_encoder
    from meddx.model.head_store import clear_head_cache, load_head
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache, embed_sources
    from meddx.train.promote import compare_heads, promote_head, record_decision

    if args.resamples < 100:
        raise InputError("--resamples must be at least 100.")
    candidate_spec = _head_spec(args.candidate)
    if not candidate_spec.startswith("local-dir:"):
        raise InputError("--candidate must be a local head folder (its history is written there).")
    candidate_folder = Path(candidate_spec.removeprefix("local-dir:")).expanduser().resolve()
    settings = Settings.from_env()
    data = load_data(args.data)
    clear_head_cache()  # heads are re-read: a folder may have been retrained since
    candidate, current = load_head(candidate_spec), load_head(_head_spec(args.current))
    encoder = load_encoder(args.model or candidate.encoder.spec, threads=settings.threads)
    candidate.check_encoder(encoder)
    current.check_encoder(encoder)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or settings.embedding_cache_dir)
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    entry = compare_heads(candidate, current, embeddings, data, resamples=args.resamples, seed=args.seed)
    _print_rows(
        [
            "finding",
            "pos",
            "neg",
            "candidate",
            "95% CI",
            "current",
            "95% CI",
            "difference",
            "95% CI",
            "ECE cand",
            "ECE cur",
        ],
        [
            [
                fid,
                m["positives"],
                m["negatives"],
                *(
                    v
                    for name in ("candidate", "current", "difference")
                    for v in (m[name]["auroc"], _ci(m[name]["ci"]))
                ),
                m["candidate"]["ece"],
                m["current"]["ece"],
            ]
            for fid, m in entry["findings"].items()
        ],
    )
    mean = entry["mean_auroc"]
    print(f"Mean AUROC: candidate {mean['candidate']:.3f}, current {mean['current']:.3f}.")
    promoted = entry["decision"] == "promoted"
    record_decision(
        candidate_folder, entry, history=current.metadata.get("history", []) if promoted else None
    )
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if not promoted:
        print("Not promoted: " + " ".join(entry["reasons"]))
        print(f"The decision is in the candidate's history ({candidate_folder / 'README.md'}).")
        return 1
    where = promote_head(candidate_folder, _head_spec(args.current))
    print(f"Promoted: {entry['reasons'][0]} The current head is now at {where}; restart the app to serve it.")
    return 0


def _ci(interval: list[float]) -> str:
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


# --- calibrate -----------------------------------------------------------------------------------------


def _calibrate_parser() -> argparse.ArgumentParser:
    from meddx.train.calibrate import DEFAULT_SENSITIVITY
    from meddx.train.fit import MIN_RELIABLE_POSITIVES

    parser = argparse.ArgumentParser(
        prog="python -m meddx calibrate",
        description="Calibrate the zero-shot scores and choose an operating threshold per finding on "
        "labelled films (the numbers hold for this data and this model revision only).",
    )
    _common(parser)
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
        return _fail("calibrate", exc)


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
    settings, data, cache = _load(args)
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
    _print_rows(
        ["finding", "pos", "neg", "threshold", "sens", "95% CI", "spec", "95% CI", "AUROC", "ECE raw", "ECE"],
        [
            [
                fid,
                e["positives"],
                e["negatives"],
                e["threshold"],
                e["sensitivity"],
                e["sensitivity_ci"] and _ci(e["sensitivity_ci"]),
                e["specificity"],
                e["specificity_ci"] and _ci(e["specificity_ci"]),
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


__all__ = ["run_calibrate", "run_eval", "run_promote", "run_train"]
