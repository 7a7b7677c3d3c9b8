"""How right the first estimate of a slow map is: BiomedCLIP's architecture with random weights
(`meddx.dev.tiny.make_tiny_model(size="biomedclip")`), the warm-up units (`meddx.explain.cost.measure_units`)
and their estimate per map, against maps drawn right after in the same process.

    .venv/bin/python scripts/estimate_check.py [--threads 2] [--maps 1] [--methods integrated_gradients,...]

Prints, per method, the estimate (and the old one: passes times a single pass, no batching), the measured
seconds per map, and the estimate's error. Needs no network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddx.dev.tiny import make_tiny_model, synthetic_film
from meddx.explain.cost import measure_units
from meddx.explain.maps import GradientShapMethod, IntegratedGradientsMethod, film_maps
from meddx.model.encoder import load_encoder
from meddx.model.scored import score_image
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import text_directions


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--maps", type=int, default=1, help="maps drawn per method")
    cli.add_argument("--methods", default="integrated_gradients,gradient_shap")
    args = cli.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        model = make_tiny_model(Path(folder) / "biomedclip", size="biomedclip")
        encoder = load_encoder(f"local-dir:{model}")
        findings = load_vocabulary().findings
        directions = text_directions(encoder, findings, cache_dir=None)
        film = synthetic_film(np.random.default_rng(0), size=512, blob=True).pixels
        scored = score_image(encoder, Image.fromarray(film).convert("RGB"), directions)
        tick = time.perf_counter()
        units = measure_units(encoder, scored)
        print(f"warm-up units measured in {time.perf_counter() - tick:.1f} s ({args.threads} threads)")
        one = time.perf_counter()
        film_maps(encoder, scored, [0], method="integrated_gradients", n_steps=1, internal_batch_size=1)
        single = time.perf_counter() - one
        old = {
            "integrated_gradients": IntegratedGradientsMethod().n_steps * single,
            "gradient_shap": GradientShapMethod().n_samples * single,
        }
        print("| method | estimate now, s/map | before (passes x one pass) | measured s/map | error now |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for method in args.methods.split(","):
            tick = time.perf_counter()
            for target in range(args.maps):
                film_maps(encoder, scored, [target + 1], method=method)
            measured = (time.perf_counter() - tick) / args.maps
            error = units[method] / measured - 1
            print(
                f"| {method} | {units[method]:.1f} | {old.get(method, float('nan')):.1f} | {measured:.1f} | "
                f"{error:+.0%} |"
            )


if __name__ == "__main__":
    main()
