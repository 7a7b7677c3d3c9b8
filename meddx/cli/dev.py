"""Development tools, run from a source checkout: ``make-tiny-model``, ``attribution-check``, ``bench``,
``feedback-loop`` (and ``notes-eval``, in `meddx.cli.notes`).

They live in `meddx.dev`, which is neither installed with the wheel nor deployed to the Space; an installed
meddx answers these commands with one line saying so (`meddx.cli.main`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Write a seeded random model of a family (tiny, or a real architecture) for tests and benchmarks."""
    from meddx.dev.tiny import make_tiny_model, train_planted_signal

    try:
        folder = make_tiny_model(args.dir, size=args.size, seed=args.seed, family=args.family)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if args.planted:
        train_planted_signal(folder, seed=args.seed)
    print(f"Wrote {folder}. Use it with: MEDDX_MODEL=local-dir:{folder}")
    return 0


def cmd_attribution_check(args: argparse.Namespace) -> int:
    """Train the planted tiny model and print `meddx.dev.attribution_check`'s evidence table, then (unless
    ``--no-timing``) `meddx.dev.map_timing`'s time per map on BiomedCLIP's architecture."""
    import dataclasses
    import logging

    import torch

    from meddx.dev.attribution_check import CHECK_METHODS, run_check
    from meddx.dev.attribution_check import log as check_log

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # progress lines only, on stderr
    check_log.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else list(CHECK_METHODS)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    text, results = run_check(
        images=args.images,
        size=args.size,
        steps=args.steps,
        methods=methods,
        **({"seeds": seeds} if seeds else {}),
    )
    print(text, flush=True)
    payload: dict = {"evidence": [dataclasses.asdict(r) | {"passes": r.passes()} for r in results]}
    if not args.no_timing:
        from meddx.dev.map_timing import format_timing, run_timing

        timings = run_timing([m for m in methods if m != "gradcam"], rounds=args.rounds)
        print(format_timing(timings, threads=args.threads))
        payload["timing"] = [dataclasses.asdict(t) for t in timings]
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `meddx.dev.bench` and print its table; ``--json OUT`` also writes the numbers."""
    if args.device is not None:
        from meddx.dev import bench_device
        from meddx.device import parse_device

        names = [n.strip() for n in (args.families or "").split(",") if n.strip()] or None
        results = bench_device.run(
            parse_device(args.device),
            threads=args.threads,
            rounds=args.repeats,
            names=names,
            quick=args.quick,
        )
        print(bench_device.format_table(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0
    if args.families is not None:
        from meddx.dev import bench_families

        names = [n.strip() for n in args.families.split(",") if n.strip()] or None
        unknown = sorted(set(names or []) - set(bench_families.ARCHITECTURES))
        if unknown:
            print(
                f"error: unknown architectures {unknown}; choose from {sorted(bench_families.ARCHITECTURES)}"
            )
            return 2
        results = bench_families.run(threads=args.threads, rounds=args.repeats, names=names)
        print(bench_families.format_table(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0
    from meddx.dev.bench import format_table, run

    results = run(args.model, quick=args.quick, threads=args.threads, repeats=args.repeats)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def cmd_feedback_loop(args: argparse.Namespace) -> int:
    """Run `meddx.dev.feedback_loop` on the tiny model (or ``--model``) and print its table."""
    import torch

    from meddx.dev.feedback_loop import format_rows, run_loop
    from meddx.dev.tiny import make_tiny_model

    torch.set_num_threads(args.threads)
    root = Path(args.dir)
    spec = args.model or f"local-dir:{make_tiny_model(root / 'model', seed=0)}"
    rows = run_loop(root, model_spec=spec, rounds=args.rounds, per_round=args.per_round, wrong=args.wrong)
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the development commands to the command line."""
    p = sub.add_parser("make-tiny-model", help="write a seeded random model for tests and benchmarks (dev)")
    p.add_argument("dir")
    p.add_argument(
        "--size",
        choices=["tiny", "tiny-cls", "biomedclip", "medsiglip", "whyxrayclip"],
        default="tiny",
        help="tiny, or a real architecture with random weights: biomedclip (open_clip_hf), "
        "medsiglip (siglip), "
        "whyxrayclip (open_clip)",
    )
    p.add_argument(
        "--family",
        choices=["open_clip_hf", "open_clip", "siglip", "clip"],
        default="open_clip_hf",
        help="model family: open_clip with a Hugging Face text tower (BiomedCLIP's), open_clip's own text "
        "transformer, transformers SigLIP or CLIP",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planted", action="store_true", help="train it to see a planted blob as a nodule")
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser(
        "attribution-check",
        help="measure how faithful the maps are on a tiny model with a planted nodule (dev)",
    )
    p.add_argument("--images", type=int, default=40, help="held-out films per seed")
    p.add_argument("--seeds", help="comma-separated film seeds (default: two held-out seeds)")
    p.add_argument("--methods", help="comma-separated methods (default: all, with legrad@3 and rollout@3)")
    p.add_argument("--no-timing", action="store_true", help="skip the time per map on BiomedCLIP's size")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, each method beside a Grad-CAM map")
    p.add_argument("--json", help="write the evidence and timings to this file")
    p.add_argument("--size", type=int, default=192, help="film side in pixels (the model reads 96)")
    p.add_argument("--steps", type=int, default=120, help="training steps (the test fixture uses 120)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_attribution_check)

    p = sub.add_parser("bench", help="measure speed and memory on the real-size architecture (dev)")
    p.add_argument("--model", help="model spec (default: BiomedCLIP architecture, random weights)")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--quick", action="store_true", help="tiny model, a few seconds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="rounds (--families: alternating rounds)")
    p.add_argument(
        "--families",
        nargs="?",
        const="",
        help="instead: each family's real architecture with random weights (biomedclip, medsiglip-448, "
        "whyxrayclip; comma-separated, default all): forward vs analysis, app ready and peak RSS",
    )
    p.add_argument(
        "--device",
        help="instead: each architecture (--families, default all; --quick: the tiny model) on the CPU and "
        "on this device (e.g. cuda) in the same run: forward, analysis, IG-50, films/s, GPU memory",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("feedback-loop", help="simulate feedback -> train -> promote on synthetic films (dev)")
    p.add_argument("dir", help="an empty folder to work in")
    p.add_argument("--model", help="model spec (default: a tiny model written into DIR/model)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of correct feedback")
    p.add_argument("--per-round", type=int, default=48, help="films per round")
    p.add_argument("--wrong", type=int, default=200, help="films in the final round of wrong answers")
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_feedback_loop)
