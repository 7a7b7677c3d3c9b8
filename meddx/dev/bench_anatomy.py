"""What the anatomy stage costs beside the image tower: ``python -m meddx.dev.bench_anatomy [--threads N]``.

Builds the BiomedCLIP-size random model (`meddx.dev.tiny`, ``size="biomedclip"``) and times, alternating in
one process so that the machine's drift hits both alike: the image tower's forward (``embed_images`` on one
224 px input) and the whole anatomy stage on a 1024 px film (`meddx.anatomy.reading.read_anatomy`: input
preparation, the lung-field network, the chest-film check and the CTR), and the network's forward alone.
Prints the medians and the ratio; the target is anatomy <= 0.2 of the tower's forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

TARGET = 0.2


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(threads: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from meddx.anatomy import network
    from meddx.anatomy.reading import read_anatomy
    from meddx.dev.tiny import make_tiny_model, synthetic_film
    from meddx.model.encoder import load_encoder

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "model", size="biomedclip")
        encoder = load_encoder(f"local-dir:{folder}", threads=threads, device="cpu")
        pixels = torch.rand(1, 3, encoder.image_size, encoder.image_size)
        grey = synthetic_film(np.random.default_rng(0), size=1024, blob=False).pixels
        net, x = network.load_network(), network.prepare(grey)
        tower, anatomy, forward = [], [], []
        with torch.inference_mode():
            _timed(lambda: encoder.embed_images(pixels), 2)
            _timed(lambda: read_anatomy(grey, "PA"), 2)
            for _ in range(repeats):
                tower += _timed(lambda: encoder.embed_images(pixels), 1)
                anatomy += _timed(lambda: read_anatomy(grey, "PA"), 1)
                forward += _timed(lambda: net(x), 1)
    results = {
        "threads": threads,
        "repeats": repeats,
        "tower_forward_s": statistics.median(tower),
        "anatomy_s": statistics.median(anatomy),
        "lung_network_forward_s": statistics.median(forward),
    }
    results["ratio"] = results["anatomy_s"] / results["tower_forward_s"]
    results["target"] = TARGET
    results["passed"] = results["ratio"] <= TARGET
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meddx.dev.bench_anatomy", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.threads, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
