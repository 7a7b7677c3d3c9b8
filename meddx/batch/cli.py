"""``python -m meddx batch SOURCE --out DIR``: analyse an archive of films on Ray Data (``meddx[scale]``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from meddx.batch.upstream import (
    InputError,
    Settings,
    check_options,
    load_vocabulary,
    parse_device,
    parse_labels,
)

MAX_MAPS = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meddx batch",
        description="Analyse a folder, manifest or dataset of chest films on Ray Data and write one Parquet "
        "row per film; a re-run with the same --out skips films already written. Needs meddx[scale].",
    )
    p.add_argument("source", help="a folder (recursive), a .csv/.parquet manifest, or hf:NAME[@REV][:SPLIT]")
    p.add_argument("--out", required=True, help="output folder (Parquet parts, batch.json, summary.json)")
    p.add_argument(
        "--notes-column", help="manifest or dataset column with clinical notes (never written out)"
    )
    p.add_argument("--id-column", help="manifest or dataset column with a unique film id (default: id)")
    p.add_argument("--path-column", help="manifest column with image paths (default: path, image, file...)")
    p.add_argument(
        "--labels", help='comma-separated findings to score, e.g. "effusion,nodule" (default: all)'
    )
    p.add_argument(
        "--maps",
        default="none",
        help="none (default), or K: maps and regions for the K most probable findings",
    )
    p.add_argument("--method", help="attribution method for --maps (default gradcam)")
    p.add_argument("--mode", help="zero-shot, fine-tuned or both (the last two need a trained head)")
    p.add_argument("--model", help="model spec (default $MEDDX_MODEL)")
    p.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE)")
    p.add_argument(
        "--ray-address", help="a running Ray cluster (e.g. auto, or ray://head:10001); default: local"
    )
    p.add_argument("--workers", type=int, default=2, help="scoring actors, one model each (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="films per task and per actor call (default 8)")
    p.add_argument("--threads-per-worker", type=int, help="torch threads per actor (default: CPUs / workers)")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs reserved for each actor, which then runs the whole analysis on CUDA (default 0: CPU)",
    )
    p.add_argument("--device", help="auto (default), cpu or cuda: cuda needs --gpus-per-worker")
    p.add_argument("--rows-per-part", type=int, default=1000, help="rows per Parquet part (default 1000)")
    return p


def _maps(raw: str) -> int:
    text = raw.strip().lower().removeprefix("top-")
    if text in ("none", "0"):
        return 0
    if text.isdigit() and 1 <= int(text) <= MAX_MAPS:
        return int(text)
    raise InputError(f"--maps takes none or a number of findings from 1 to {MAX_MAPS}, not {raw!r}.")


@contextlib.contextmanager
def _stop_on_sigterm():
    """Turn SIGTERM into `SystemExit`, so that buffered rows are written and a local Ray is shut down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_batch(argv: list[str]) -> int:
    """Entry point of ``python -m meddx batch``; returns the exit status (errors raise `MeddxError`)."""
    from dataclasses import replace

    args = build_parser().parse_args(argv)
    from meddx.batch.engine import Engine, actor_device, describe, import_ray, run
    from meddx.batch.output import Layout
    from meddx.batch.score import Options
    from meddx.batch.sources import read_source

    import_ray()  # say what to install before doing anything else
    if args.workers < 1 or args.batch_size < 1 or args.rows_per_part < 1:
        raise InputError("--workers, --batch-size and --rows-per-part must be at least 1.")
    if args.gpus_per_worker < 0:
        raise InputError("--gpus-per-worker cannot be negative.")
    settings = Settings.from_env()
    if args.model:
        settings = replace(settings, model=args.model)
    if args.probe:
        settings = replace(settings, probe=args.probe)
    if args.device:
        settings = replace(settings, device=parse_device(args.device))
    actor_device(settings.device, args.gpus_per_worker)  # a contradiction is refused before Ray starts
    check_options(settings, method=args.method, mode=args.mode)
    labels = parse_labels(args.labels)
    findings = load_vocabulary().select(labels, max_labels=settings.limits.max_labels)
    top_k = _maps(args.maps)
    out = Path(args.out).expanduser()
    source = read_source(
        args.source,
        notes_column=args.notes_column,
        id_column=args.id_column,
        path_column=args.path_column,
        exclude=out,
    )
    options = Options(
        labels=tuple(labels) if labels else None, top_k=top_k, method=args.method, mode=args.mode
    )
    layout = Layout(
        tuple(f.id for f in findings),
        head=bool(settings.probe),
        flags=bool(settings.probe or settings.calibration),
    )
    run_settings = {
        "model": settings.model,
        "probe": settings.probe,
        "calibration": settings.calibration,
        "findings": list(layout.findings),
        "maps": top_k,
        "method": args.method,
        "mode": args.mode,
        "notes_column": args.notes_column,
    }
    engine = Engine(
        ray_address=args.ray_address,
        workers=args.workers,
        batch_size=args.batch_size,
        threads_per_worker=args.threads_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        rows_per_part=args.rows_per_part,
    )
    with _stop_on_sigterm():  # SIGTERM (a scheduler's stop) writes what is done and stops Ray
        summary = run(
            source,
            out,
            settings=settings,
            options=options,
            layout=layout,
            engine=engine,
            run_settings=run_settings,
        )
    print(f"meddx: {describe(summary)}; results in {out}", file=sys.stderr)
    return 0
