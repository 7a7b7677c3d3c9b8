"""``promote``: replace the served head with a candidate only if it measures better (`meddx.train.promote`).

    python -m meddx promote --candidate DIR --current DIR|hf-hub:owner/name --data HELD_OUT [--json OUT]

Exits 0 when the candidate replaced the current head and 1 when it was refused, with the reasons; 2 for bad
input, 3 when a model or head cannot be used (one line on stderr).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meddx.cli.common import add_device_option, with_device
from meddx.cli.labelled import fail, interval_text, print_rows, write_json
from meddx.errors import InputError, MeddxError


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
    add_device_option(parser)
    return parser


def run_promote(argv: list[str]) -> int:
    """Run ``promote``: exit 0 when promoted, 1 when refused (the reasons printed), 2/3 on errors."""
    args = _promote_parser().parse_args(argv)
    try:
        return _promote(args)
    except MeddxError as exc:
        return fail("promote", exc)


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
    settings = with_device(Settings.from_env(), args)
    data = load_data(args.data)
    clear_head_cache()  # heads are re-read: a folder may have been retrained since
    candidate, current = load_head(candidate_spec), load_head(_head_spec(args.current))
    encoder = load_encoder(
        args.model or candidate.encoder.spec, threads=settings.threads, device=settings.device
    )
    candidate.check_encoder(encoder)
    current.check_encoder(encoder)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or settings.embedding_cache_dir)
    embeddings = embed_sources(encoder, data.sources, names=data.names, cache=cache, progress=True)
    entry = compare_heads(candidate, current, embeddings, data, resamples=args.resamples, seed=args.seed)
    print_rows(
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
                    for v in (m[name]["auroc"], interval_text(m[name]["ci"]))
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
        write_json(args.json, entry)
    if not promoted:
        print("Not promoted: " + " ".join(entry["reasons"]))
        print(f"The decision is in the candidate's history ({candidate_folder / 'README.md'}).")
        return 1
    where = promote_head(candidate_folder, _head_spec(args.current))
    print(f"Promoted: {entry['reasons'][0]} The current head is now at {where}; restart the app to serve it.")
    return 0


__all__ = ["run_promote"]
