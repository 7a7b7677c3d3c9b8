"""The Ray Data pipeline: list -> decode (tasks) -> score (an actor pool, one model per actor) -> Parquet.

Runs on a local Ray started for the job, or on a cluster (``ray_address``). The driver lists the films,
skips those already in the output, streams results back and writes them as whole Parquet parts (so the
output folder only needs to exist on the driver's machine); the films themselves are read by the
decoding tasks, so on a cluster SOURCE must be at the same path on every node (or be an ``hf:`` dataset
every node can load).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from meddx.batch.decode import decode_batch
from meddx.batch.output import SUMMARY_FILE, Layout, PartWriter, check_run, done_ids
from meddx.batch.score import Options, Score
from meddx.batch.sources import Source
from meddx.batch.upstream import InputError, MeddxError, Settings, __version__

RAY_VERSION = "2.60.0"
RAY_MISSING = f'batch needs Ray Data: pip install "meddx[scale]" (or pip install "ray[data]=={RAY_VERSION}").'
DECODE_CPUS = 0.25  # decoding is light next to scoring; leaves room for it beside the actors
MAX_BLOCKS = 4096


@dataclass(frozen=True)
class Engine:
    """Where and how wide to run.

    Attributes:
        ray_address: a running cluster (``ray start --head`` prints it; ``auto`` finds a local one);
            None starts a local Ray for this job and stops it at the end.
        workers: scoring actors, each holding one copy of the model.
        batch_size: films per decoding task and per call of a scoring actor.
        threads_per_worker: torch threads per actor; None: the cluster's CPUs divided among the actors.
        gpus_per_worker: GPUs Ray reserves for each actor.
        local_cpus: CPUs of a local Ray (default: all); object_store_mb: its object store (default: Ray's).
        rows_per_part, seconds_per_part: how often results are written (what a kill can lose).
    """

    ray_address: str | None = None
    workers: int = 2
    batch_size: int = 8
    threads_per_worker: int | None = None
    gpus_per_worker: float = 0.0
    local_cpus: int | None = None
    object_store_mb: int | None = None
    rows_per_part: int = 1000
    seconds_per_part: float = 30.0


def import_ray():
    """The ``ray`` module with Ray Data, or `MeddxError` saying what to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MeddxError(RAY_MISSING) from None
    return ray


def start_ray(ray, engine: Engine) -> bool:
    """Connect to the cluster, or start a local Ray; True when this job started it (and must stop it)."""
    if ray.is_initialized():
        return False
    # Workers' own output stays in Ray's session logs (/tmp/ray/session_latest/logs): on the console, a
    # model that fails every actor would otherwise print one traceback per retry.
    common = {"logging_level": logging.WARNING, "include_dashboard": False, "log_to_driver": False}
    if engine.ray_address:
        ray.init(address=engine.ray_address, **common)
        return True  # disconnects the driver only; the cluster keeps running
    ray.init(
        num_cpus=engine.local_cpus or os.cpu_count() or 1,
        object_store_memory=engine.object_store_mb * 2**20 if engine.object_store_mb else None,
        **common,
    )
    return True


def meddx_cause(exc: BaseException) -> str | None:
    """The message of the `MeddxError` behind a Ray error (e.g. a damaged model failing every actor's
    start), found in the exception chain or, for errors Ray re-raises as text, in the message."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MeddxError):
            return str(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _meddx_cause_in_text(text: str) -> str | None:
    found = re.findall(r"meddx\.errors\.\w+: (.+)", text)
    return found[-1].strip() if found else None


def actor_device(requested: str, gpus_per_worker: float) -> str:
    """The device every scoring actor runs on, from ``--device`` / ``MEDDX_DEVICE`` and ``--gpus-per-worker``.

    Ray shows an actor only the GPUs reserved for it (as ``cuda:0`` upwards), so: with GPUs reserved the
    actors run on ``cuda``, named, so that an actor that sees none refuses instead of scoring on its CPU;
    without, on the CPU. A device that contradicts the reservation is refused before Ray starts.

    Raises:
        InputError: ``cpu`` with GPUs reserved, ``cuda:N`` with GPUs reserved, or ``cuda`` without.
    """
    if gpus_per_worker > 0:
        if requested == "cpu":
            raise InputError(
                "--gpus-per-worker reserves GPUs, but the device is cpu (--device or MEDDX_DEVICE): drop one "
                "of the two."
            )
        if requested.startswith("cuda:"):
            raise InputError(
                f"--device {requested}: Ray gives each actor its own GPU (cuda:0 inside the actor); use "
                "--device cuda or auto with --gpus-per-worker."
            )
        return "cuda"
    if requested.startswith("cuda"):
        raise InputError(
            f"--device {requested} needs --gpus-per-worker (e.g. 1): Ray gives a scoring actor a GPU only "
            "when one is reserved for it."
        )
    return "cpu"


def actor_resources(ray, engine: Engine) -> tuple[int, float]:
    """(torch threads per actor, logical CPUs each actor asks Ray for).

    Raises:
        InputError: GPUs were asked for that the cluster does not have (Ray would wait for them forever).
    """
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if engine.gpus_per_worker > gpus:
        raise InputError(
            f"--gpus-per-worker {engine.gpus_per_worker:g}, but the Ray cluster has {gpus:g} GPU(s), so no "
            "scoring actor could ever start. Leave --gpus-per-worker out to run on the CPUs, or use a "
            "cluster with GPUs."
        )
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # An actor lives on one node: never ask for more CPUs than the largest node has.
    node_cpus = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=cpus)
    threads = engine.threads_per_worker or max(1, int(min(cpus // engine.workers, node_cpus)))
    # Leave part of a CPU for the decoding tasks, or they would wait for the actors forever.
    actor_cpus = max(0.25, min(float(threads), (cpus - 2 * DECODE_CPUS) / engine.workers, node_cpus))
    return threads, round(actor_cpus, 2)


def run(
    source: Source,
    out: Path,
    *,
    settings: Settings,
    options: Options,
    layout: Layout,
    engine: Engine,
    run_settings: dict,
) -> dict:
    """Analyse every film of ``source`` not yet in ``out``; write parts and ``summary.json``; return it."""
    ray = import_ray()
    start = time.perf_counter()
    check_run(out, run_settings)
    done, rows_before = done_ids(out)
    todo = [item for item in source.items if item["id"] not in done]
    summary = {
        "meddx_version": __version__,
        "source_kind": source.kind,
        "films_in_source": len(source.items),
        "already_done": len(source.items) - len(todo),
        "analysed_this_run": 0,
        "ok": 0,
        "errors": 0,
        "errors_by_kind": {},
        "model": settings.model,
        "probe": settings.probe,
        "calibration": settings.calibration,
        "workers": engine.workers,
        "batch_size": engine.batch_size,
        "gpus_per_worker": engine.gpus_per_worker,
        "ray_address": engine.ray_address or "local",
    }
    counts: Counter = Counter()
    writer = PartWriter(
        out, layout, rows_per_part=engine.rows_per_part, seconds_per_part=engine.seconds_per_part
    )
    started = False
    try:
        if todo:
            started = start_ray(ray, engine)
            summary["ray_start_s"] = round(time.perf_counter() - start, 2)
            threads, actor_cpus = actor_resources(ray, engine)
            summary["threads_per_worker"] = threads
            worker_settings = replace(
                settings, threads=threads, device=actor_device(settings.device, engine.gpus_per_worker)
            )
            dataset = _pipeline(ray, source, todo, worker_settings, options, layout, engine, actor_cpus)
            try:
                for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    if "first_result_s" not in summary:
                        summary["first_result_s"] = round(time.perf_counter() - start, 2)
                    kinds = table.column("error_kind").to_pylist()
                    counts.update(kind or "ok" for kind in kinds)
                    writer.add(table)
            except Exception as exc:  # an actor could not start: say why in meddx's words, if it was ours
                message = meddx_cause(exc) or _meddx_cause_in_text(str(exc))
                if message is None:
                    raise
                raise MeddxError(message) from None
    finally:
        writer.flush()
        if started:
            ray.shutdown()
    wall = time.perf_counter() - start
    errors = {kind: n for kind, n in sorted(counts.items()) if kind != "ok"}
    analysed = sum(counts.values())
    summary.update(
        analysed_this_run=analysed,
        ok=counts["ok"],
        errors=sum(errors.values()),
        errors_by_kind=errors,
        rows_in_output=rows_before + analysed,
        parts_written=writer.parts,
        wall_s=round(wall, 2),
        films_per_s=round(analysed / wall, 3) if analysed else None,
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _pipeline(ray, source, todo, settings, options, layout, engine, actor_cpus):
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(todo) / engine.batch_size)))
    dataset = ray.data.from_items(todo, override_num_blocks=blocks)
    dataset = dataset.map_batches(
        decode_batch,
        fn_kwargs={"settings": settings, "hub": source.hub},
        batch_size=engine.batch_size,
        batch_format="pyarrow",
        num_cpus=DECODE_CPUS,
    )
    return dataset.map_batches(
        Score,
        fn_constructor_kwargs={"settings": settings, "options": options, "layout": layout},
        compute=ray.data.ActorPoolStrategy(size=engine.workers),
        batch_size=engine.batch_size,
        batch_format="pyarrow",
        num_cpus=actor_cpus,
        num_gpus=engine.gpus_per_worker or None,
    )


def describe(summary: dict) -> str:
    """One line for the console."""
    errors = ", ".join(f"{n} {kind}" for kind, n in summary["errors_by_kind"].items())
    rate = f"{summary['films_per_s']} films/s" if summary["films_per_s"] else "nothing to do"
    return (
        f"analysed {summary['analysed_this_run']} films ({summary['ok']} ok, {summary['errors']} errors"
        f"{': ' + errors if errors else ''}), skipped {summary['already_done']} already done; "
        f"{summary['wall_s']} s, {rate}"
    )
