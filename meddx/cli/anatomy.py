"""``python -m meddx train-anatomy``: train the lung-field network from a seed, measure it on held-out films.

Writes into ``--out``: ``lung_unet.safetensors`` (the weights), ``lung_unet.json`` (the card's
machine-readable half: checksum, data, split sizes, licence, held-out metrics, command, seed),
``split.json`` (the film names of each role) and ``scores.json`` (Dice, IoU, HD95 of each held-out
lung). Copy the first two into ``meddx/anatomy/weights/`` to ship them. Needs only the runtime
dependencies (torch, MONAI).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from meddx.errors import InputError

SOURCES = {"both": ("Montgomery", "Shenzhen"), "montgomery": ("Montgomery",)}
LICENCES = {
    "both": (
        "CC BY-NC-SA 4.0 (non-commercial, share-alike): trained on the Shenzhen lung masks of Stirenko "
        "et al. 2018 (CC BY-NC-SA 4.0) and the NLM Montgomery and Shenzhen sets (Jaeger et al. 2014; "
        "Candemir et al. 2014)."
    ),
    "montgomery": (
        "Apache-2.0, as meddx: trained on the NLM Montgomery County set and its NLM masks only, which NLM "
        "makes available to the research community (cite Jaeger et al., QIMS 2014; Candemir et al., IEEE "
        "TMI 2014)."
    ),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m meddx train-anatomy", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", required=True, type=Path, help="the lung_masks folder (manifest.csv, images/, masks/)"
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the weights, card and scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", choices=sorted(SOURCES), default="both", help="films to train on")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (batch 8)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--measure-only", type=Path, help="no training: measure this weights file on the split")
    return p


def run_train_anatomy(argv: list[str]) -> int:
    """Entry point of ``train-anatomy``; returns the exit status."""
    args = parser().parse_args(argv)
    import torch
    from safetensors.torch import save_file

    from meddx.anatomy import network
    from meddx.train import anatomy_data, anatomy_fit, anatomy_metrics

    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        raise InputError(f"--data {args.data} is not a folder: point it at the lung_masks folder.")
    films = anatomy_data.read_manifest(args.data)
    split = anatomy_data.split(films, seed=args.seed)
    sources = SOURCES[args.sources]
    train = tuple(f for f in split.train if f.source in sources)
    val = tuple(f for f in split.val if f.source in sources)
    config = anatomy_fit.FitConfig(seed=args.seed, steps=args.steps)

    def log(line: str) -> None:
        print(f"train-anatomy: {line}", file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / network.WEIGHTS_FILE.name

    def keep(state: dict) -> None:  # the best so far, in case the run is stopped
        save_file({k: v.contiguous() for k, v in state.items()}, str(args.out / "best_so_far.safetensors"))

    if args.measure_only:
        from safetensors.torch import load_file

        net = network.build_network()
        net.load_state_dict(load_file(str(args.measure_only)))
        net.eval()
        history = {"best_val_dice": None, "history": [], "train_seconds": None}
    else:
        net, history = anatomy_fit.fit(train, val, config, log, keep)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))

    start, scores = time.monotonic(), []
    for film in split.test:  # every held-out film of both sources, whatever was trained on
        truth = anatomy_data.lung_labels(anatomy_data.read_grey(film.mask))
        x = network.prepare(anatomy_data.read_grey(film.image))
        predicted = anatomy_metrics.predict_labels(net, x, truth.shape)
        scores += anatomy_metrics.score_film(film.name, film.source, predicted, truth)
    summary = anatomy_metrics.summarise(scores)
    log(f"measured {len(split.test)} held-out films in {time.monotonic() - start:.0f} s")

    def counts(role: tuple) -> dict:
        return {s: sum(f.source == s for f in role) for s in ("Montgomery", "Shenzhen")}

    card = {
        "sha256": network.sha256(weights),
        "size": network.SIZE,
        "classes": list(network.CLASSES),
        "architecture": {
            "monai": "UNet",
            "channels": list(network.CHANNELS),
            "strides": list(network.STRIDES),
            "num_res_units": network.RESIDUAL_UNITS,
        },
        "licence": LICENCES[args.sources],
        "data": f"lung_masks ({' + '.join(sources)}), split by patient; held out: both sources",
        "split": {"train": counts(train), "validation": counts(val), "held_out": counts(split.test)},
        "command": "python -m meddx train-anatomy " + shlex.join(argv),
        "seed": args.seed,
        "fit": asdict(config),
        "best_val_dice": history["best_val_dice"],
        "train_seconds": history["train_seconds"],
        "metrics": summary,
    }
    (args.out / network.CARD_FILE.name).write_text(json.dumps(card, indent=1) + "\n")
    roles = {"train": train, "validation": val, "held_out": split.test}
    (args.out / "split.json").write_text(
        json.dumps({k: [f.name for f in v] for k, v in roles.items()}, indent=0)
    )
    (args.out / "scores.json").write_text(json.dumps(anatomy_metrics.rows(scores), indent=0))
    (args.out / "history.json").write_text(json.dumps(history["history"], indent=0))
    print(json.dumps(summary, indent=1))
    return 0
