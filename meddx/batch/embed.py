"""``python -m meddx batch-embed --data SPEC``: ``train``'s and ``eval``'s embedding step on Ray.

The labelled data is read as ``train`` reads it (`meddx.train.datasets.load_data`); images whose embedding is
not yet in the embedding cache go to an actor pool (each actor loads the model once and runs
`meddx.train.embedding_cache.embed_sources`, the function ``train`` uses); the driver writes every embedding
into its cache. ``train``/``eval`` with the same ``--cache-dir`` and model then read them all from the
cache. Images are sent to the actors as bytes, so on a cluster only the driver needs to see the files.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import pyarrow as pa

from meddx.batch.engine import Engine, actor_device, actor_resources, import_ray, start_ray
from meddx.batch.upstream import InputError, MeddxError, Settings, embedding_step, parse_device

RESULT = pa.schema([("digest", pa.string()), ("embedding", pa.list_(pa.float32())), ("error", pa.string())])


class Embed:
    """Ray Data callable class: image bytes in, unit embeddings out (or an error per unreadable image)."""

    def __init__(self, settings: Settings) -> None:
        *_, embed_sources, load_encoder, _ = embedding_step()
        self.encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
        self.embed_sources = embed_sources

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        try:
            embeddings = self._embed(items)
            errors = [None] * len(items)
        except MeddxError:  # one bad image: embed one by one to find it
            embeddings, errors = [], []
            for item in items:
                try:
                    embeddings += self._embed([item])
                    errors.append(None)
                except MeddxError as exc:
                    embeddings.append(None)
                    errors.append(str(exc))
        rows = [
            {"digest": item["digest"], "embedding": None if e is None else e.tolist(), "error": error}
            for item, e, error in zip(items, embeddings, errors, strict=True)
        ]
        return pa.Table.from_pylist(rows, schema=RESULT)

    def _embed(self, items: list[dict]) -> list:
        sources = [item["image"] for item in items]
        names = [item["name"] for item in items]
        return list(self.embed_sources(self.encoder, sources, names=names, batch_size=len(items)))


def prefill(data, settings: Settings, cache, engine: Engine) -> dict:
    """Embed on Ray every image of ``data`` (`LabelledImages`) missing from ``cache``; return counts, and
    under ``messages`` the readable reason for each image that could not be read (the CLI prints them)."""
    ray = import_ray()
    *_, content_digest, _, _, model_identity = embedding_step()
    start = time.perf_counter()
    identity = model_identity(settings.model)
    digests = [content_digest(s, n) for s, n in zip(data.sources, data.names, strict=True)]
    todo = {}
    for digest, source, name in zip(digests, data.sources, data.names, strict=True):
        if digest not in todo and cache.get(identity, digest) is None:
            todo[digest] = {"digest": digest, "source": source, "name": name}
    counts = {
        "images": len(digests),
        "cached_before": len(set(digests)) - len(todo),
        "embedded": 0,
        "errors": 0,
    }
    if not todo:
        return {**counts, "wall_s": round(time.perf_counter() - start, 2)}
    items = [
        {"digest": t["digest"], "name": t["name"], "image": _bytes(t["source"], t["name"])}
        for t in todo.values()
    ]
    device = actor_device(settings.device, engine.gpus_per_worker)  # refused before Ray starts
    started = start_ray(ray, engine)
    try:
        threads, actor_cpus = actor_resources(ray, engine)
        dataset = ray.data.from_items(
            items, override_num_blocks=max(1, math.ceil(len(items) / engine.batch_size))
        )
        dataset = dataset.map_batches(
            Embed,
            fn_constructor_kwargs={
                "settings": Settings(model=settings.model, threads=threads, device=device)
            },
            compute=ray.data.ActorPoolStrategy(size=engine.workers),
            batch_size=engine.batch_size,
            batch_format="pyarrow",
            num_cpus=actor_cpus,
            num_gpus=engine.gpus_per_worker or None,
        )
        import torch

        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in table.to_pylist():
                if row["error"]:
                    counts["errors"] += 1
                    counts.setdefault("messages", []).append(row["error"])
                    continue
                cache.put(identity, row["digest"], torch.from_numpy(np.asarray(row["embedding"], np.float32)))
                counts["embedded"] += 1
    finally:
        if started:
            ray.shutdown()
    return {**counts, "wall_s": round(time.perf_counter() - start, 2)}


def _bytes(source, name: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read image {name!r} ({exc.strerror}).") from exc


def run_batch_embed(argv: list[str]) -> int:
    """Entry point of ``python -m meddx batch-embed``."""
    p = argparse.ArgumentParser(
        prog="python -m meddx batch-embed",
        description="Fill the embedding cache for `train`/`eval` on Ray (needs meddx[scale]).",
    )
    p.add_argument(
        "--data", required=True, help="labelled data, as for train: folder, .csv/.jsonl or hf:NAME"
    )
    p.add_argument("--model", help="model spec (default $MEDDX_MODEL)")
    p.add_argument("--cache-dir", help="embedding cache folder (default ~/.cache/meddx/embeddings)")
    p.add_argument("--ray-address", help="a running Ray cluster (e.g. auto); default: a local Ray")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads-per-worker", type=int)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs for each actor (runs it on CUDA)")
    p.add_argument("--device", help="auto (default), cpu or cuda: cuda needs --gpus-per-worker")
    args = p.parse_args(argv)
    import_ray()
    from dataclasses import replace

    load_data, embedding_cache, *_ = embedding_step()
    settings = Settings.from_env()
    if args.model:
        settings = replace(settings, model=args.model)
    if args.device:
        settings = replace(settings, device=parse_device(args.device))
    engine = Engine(
        ray_address=args.ray_address,
        workers=args.workers,
        batch_size=args.batch_size,
        threads_per_worker=args.threads_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    cache = embedding_cache(args.cache_dir or settings.embedding_cache_dir)
    counts = prefill(load_data(args.data), settings, cache, engine)
    for message in counts.get("messages", []):
        print(f"meddx: {message}", file=sys.stderr)
    print(
        f"meddx: {counts['images']} images: {counts['cached_before']} already cached, {counts['embedded']} "
        f"embedded, {counts['errors']} unreadable; {counts['wall_s']} s. Now run train/eval with the same "
        "--cache-dir and model.",
        file=sys.stderr,
    )
    return 2 if counts["errors"] else 0
