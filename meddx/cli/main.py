"""Command line: ``python -m meddx analyze | notes | notes-eval | download | make-tiny-model | train | eval
| bench | attribution-check``.

Imports are lazy so that ``--help`` and the light commands start fast. Errors meant for people
(`InputError`, `ModelError`) print one line on stderr and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from meddx.errors import InputError, MeddxError

EXIT_INPUT = 2
EXIT_MODEL = 3

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom", ""}


def _settings(args: argparse.Namespace):
    from dataclasses import replace

    from meddx.config import Settings

    settings = Settings.from_env()
    if getattr(args, "model", None):
        settings = replace(settings, model=args.model)
    if getattr(args, "probe", None):
        settings = replace(settings, probe=args.probe)
    return settings


def _expand(paths: list[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def _read_notes(args: argparse.Namespace) -> str | None:
    if args.notes_file:
        try:
            return Path(args.notes_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"Cannot read the notes file ({exc.strerror}).") from exc
    return args.notes


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse one or more films; one JSON object, or JSON lines for several."""
    from meddx.model.vocabulary import load_vocabulary, parse_labels
    from meddx.pipeline import analyze

    settings = _settings(args)
    notes = _read_notes(args)
    labels = parse_labels(args.labels)
    to_map = parse_labels(args.map)  # names or synonyms, as for --labels
    map_ids = [f.id for f in load_vocabulary().select(to_map)] if to_map else None
    paths = list(_expand(args.paths))
    batch = len(paths) > 1 or any(Path(p).is_dir() for p in args.paths)
    failures = 0
    overlay_names: set[str] = set()
    for path in paths:
        try:
            if not path.is_file():
                raise InputError("No such file.")
            analysis = analyze(
                path,
                notes,
                labels=labels,
                settings=settings,
                filename=path.name,
                method=args.method,
                top_k=args.top_k,
                map_findings=map_ids,
                threshold=args.threshold,
                mode=args.mode,
                include_maps=args.include_maps,
            )
        except InputError as exc:
            failures += 1
            print(f"meddx: {path.name}: {exc}", file=sys.stderr)
            if batch:
                print(json.dumps({"file": path.name, "error": str(exc)}))
            continue
        data = analysis.to_dict()
        if args.overlays:
            data["overlay_files"] = _write_overlays(analysis, path, Path(args.overlays), overlay_names)
        if batch:
            data["file"] = path.name
        if args.json or batch:
            print(json.dumps(data, indent=None if batch else 2))
        else:
            print(_summary(data, path.name))
    if not paths:
        print("meddx: no image files found.", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_INPUT if failures else 0


def _write_overlays(analysis, film: Path, folder: Path, taken: set[str]) -> list[str]:
    """Each mapped finding's overlay at the film's full size, as ``FOLDER/<film>.<finding>.png``.

    Films with the same name from different folders (``a/image.dcm``, ``b/image.dcm``) get ``image-2``,
    ``image-3``...: ``taken`` holds the names this run has used.
    """
    from meddx.explain.maps import png_bytes

    stem, n = film.stem, 1
    while stem in taken:
        n += 1
        stem = f"{film.stem}-{n}"
    taken.add(stem)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for finding_id in analysis.maps:
            target = folder / f"{stem}.{finding_id}.png"
            target.write_bytes(png_bytes(analysis.overlay(finding_id)))
            written.append(str(target))
    except OSError as exc:
        raise InputError(f"Cannot write the overlays to {folder} ({exc.strerror}).") from exc
    return written


def _summary(data: dict, name: str) -> str:
    lines = [f"{name}  (model {data['model']['spec']} @ {data['model']['revision']})"]
    for f in data["findings"]:
        mark = "FLAG" if f["flagged"] else "    "
        lines.append(f"  {mark} {f['label']:<22} {f['probability']:.3f}")
        for region in f["regions"]:
            box = ", ".join(str(v) for v in region["box"])
            lines.append(f"         region: {region['location']} (score {region['score']:.2f}, box {box})")
    lines.extend(f"  overlay: {path}" for path in data.get("overlay_files", []))
    lines.extend(f"  warning: {w}" for w in data["warnings"])
    lines.append(data["disclaimer"])
    return "\n".join(lines)


def cmd_download(args: argparse.Namespace) -> int:
    """Copy a Hub model into a self-contained folder for offline use."""
    from meddx.config import DEFAULT_MODEL
    from meddx.model.encoder import download_model

    folder = download_model(args.model or DEFAULT_MODEL, args.to)
    print(f"Wrote {folder}. Use it with: MEDDX_MODEL=local-dir:{folder}")
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Write a seeded random model (tiny, or BiomedCLIP's architecture) for tests and benchmarks."""
    from meddx.dev.tiny import make_tiny_model, train_planted_signal

    folder = make_tiny_model(args.dir, size=args.size, seed=args.seed)
    if args.planted:
        train_planted_signal(folder, seed=args.seed)
    print(f"Wrote {folder}. Use it with: MEDDX_MODEL=local-dir:{folder}")
    return 0


def cmd_attribution_check(args: argparse.Namespace) -> int:
    """Train the planted tiny model and print `meddx.dev.attribution_check`'s evidence table."""
    import logging

    import torch

    from meddx.dev.attribution_check import log as check_log
    from meddx.dev.attribution_check import run_check

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # progress lines only, on stderr
    check_log.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    print(run_check(images=args.images, size=args.size, steps=args.steps))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `meddx.dev.bench` and print its table; ``--json OUT`` also writes the numbers."""
    from meddx.dev.bench import format_table, run

    results = run(args.model, quick=args.quick, threads=args.threads, repeats=args.repeats)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


# Sub-commands with their own argument parsers: name -> (module, function(argv) -> exit status, help).
DELEGATED = {
    "notes": ("meddx.notes_cli", "run_notes", "extract concepts from clinical notes"),
    "train": ("meddx.cli.train", "run_train", "train a fine-tuned head on labelled films"),
    "eval": ("meddx.cli.train", "run_eval", "evaluate zero-shot and fine-tuned scores on labelled films"),
    "notes-eval": (
        "meddx.notes_cli",
        "run_notes_eval",
        "measure the notes reader on a labelled sentence set",
    ),
}


def _delegate(name: str, argv: list[str]) -> int:
    import importlib

    module, function, _ = DELEGATED[name]
    return getattr(importlib.import_module(module), function)(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m meddx",
        description="meddx: chest X-ray triage support (decision support, not a diagnosis).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="score findings on chest films")
    p.add_argument("paths", nargs="+", help="image or DICOM files, or folders of them")
    notes = p.add_mutually_exclusive_group()
    notes.add_argument("--notes", help="clinical notes text")
    notes.add_argument("--notes-file", help="read clinical notes from a file")
    p.add_argument(
        "--labels", help='comma-separated findings to score, e.g. "effusion,nodule" (default: all)'
    )
    p.add_argument(
        "--model", help="model spec: hf-hub:org/name[@rev] or local-dir:/path (default $MEDDX_MODEL)"
    )
    p.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE)")
    p.add_argument("--mode", help="zero-shot, fine-tuned or both (the last two need a trained head)")
    p.add_argument("--threshold", type=float, help="one flagging threshold for every finding (0-1)")
    p.add_argument(
        "--method",
        help="attribution method: gradcam (default, fast), integrated_gradients, gradient_shap or occlusion "
        "(seconds to a minute per map on a CPU)",
    )
    p.add_argument("--top-k", type=int, help="maps and regions for the N most probable findings (default 3)")
    p.add_argument("--map", help="comma-separated findings to map instead of the top k")
    p.add_argument("--include-maps", action="store_true", help="embed the overlays in the JSON as base64 PNG")
    p.add_argument("--overlays", metavar="DIR", help="write each map's overlay as DIR/<film>.<finding>.png")
    p.add_argument("--json", action="store_true", help="print JSON (always on for several files)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("download", help="copy a Hub model into a folder that loads offline")
    p.add_argument("--to", required=True, help="destination folder")
    p.add_argument("--model", help="hf-hub:org/name[@rev] (default: BiomedCLIP)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("make-tiny-model", help="write a seeded random model for tests and benchmarks")
    p.add_argument("dir")
    p.add_argument("--size", choices=["tiny", "biomedclip"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planted", action="store_true", help="train it to see a planted blob as a nodule")
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser(
        "attribution-check", help="measure how faithful the maps are on a tiny model with a planted nodule"
    )
    p.add_argument("--images", type=int, default=30, help="held-out films per method")
    p.add_argument("--size", type=int, default=192, help="film side in pixels (the model reads 96)")
    p.add_argument("--steps", type=int, default=120, help="training steps (the test fixture uses 120)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_attribution_check)

    p = sub.add_parser("bench", help="measure speed and memory on the real-size architecture")
    p.add_argument("--model", help="model spec (default: BiomedCLIP architecture, random weights)")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--quick", action="store_true", help="tiny model, a few seconds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(func=cmd_bench)

    for name, (_, _, text) in DELEGATED.items():
        sub.add_parser(name, help=f"{text} (see `{name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        if argv and argv[0] in DELEGATED:
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except InputError as exc:
        print(f"meddx: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except MeddxError as exc:
        print(f"meddx: {exc}", file=sys.stderr)
        return EXIT_MODEL
