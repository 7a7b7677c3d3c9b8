"""What the input-sanity checks (issue 14) add to an analysis, against the scoring pass in the same run.

    python scripts/bench_sanity.py [--size biomedclip] [--repeats 7] [--threads 1] [--samples DIR]

On a seeded random model of the given size (`meddx.dev.tiny`; "biomedclip" is BiomedCLIP's shape): the
median of the scoring pass (`score_image`, 15 findings, the baseline), of what the chest-X-ray check adds
(one dot product with the embedding the scoring pass kept), its one-off text-tower cost, the colour
check on a 2048 x 2048 RGB image against decoding it, and "did you mean" for ten labels. Also prints the
check's probability on a grayscale film and on colour noise (random weights: no meaning, only its spread),
and the coloured fraction of the real films in ``--samples`` when that folder exists.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meddx.dev.tiny import make_tiny_model, synthetic_film
from meddx.io import load_study
from meddx.io.colour import coloured_fraction
from meddx.model import sanity
from meddx.model.encoder import load_encoder
from meddx.model.scored import score_image
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import text_directions


def median_s(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="biomedclip")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", default="/work/shared/samples/cxr")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "model", size=args.size, seed=0)
        encoder = load_encoder(f"local-dir:{folder}", threads=args.threads)
        vocabulary = load_vocabulary()
        directions = text_directions(encoder, list(vocabulary.findings))
        film = Image.fromarray(synthetic_film(np.random.default_rng(0), size=1024, blob=True).pixels)
        film = film.convert("RGB")
        noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))

        start = time.perf_counter()
        sanity.chest_xray_probability(encoder, score_image(encoder, film, directions).embedding())
        first = time.perf_counter() - start
        scored = score_image(encoder, film, directions)
        score_s = median_s(lambda: score_image(encoder, film, directions), args.repeats)
        check_s = median_s(lambda: sanity.chest_xray_probability(encoder, scored.embedding()), args.repeats)
        cold = first - score_s - check_s
        p_film = sanity.chest_xray_probability(encoder, scored.embedding())
        p_noise = sanity.chest_xray_probability(encoder, score_image(encoder, noise, directions).embedding())

    rgb = np.random.default_rng(1).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", compress_level=1)
    png = buffer.getvalue()
    read_s = median_s(lambda: load_study(png), max(3, args.repeats // 2))
    colour_s = median_s(lambda: coloured_fraction(rgb), args.repeats)
    labels = ["effusoin", "pnuemothorax", "hiatus hernia", "cardiomegally", "foo", "left pleural effusoin",
              "rib fractur", "nodules", "azygos lobe", "pneumomediastinum"]  # fmt: skip
    custom = [vocabulary.lookup(label) or vocabulary.custom(label) for label in labels]
    suggest_s = median_s(lambda: vocabulary.near_misses(custom), args.repeats)

    print(f"model: {args.size} (random weights), {args.threads} thread(s), median of {args.repeats}")
    print(f"  scoring pass, 15 findings (baseline)     {score_s * 1000:8.1f} ms")
    print(f"  + chest-X-ray check (dot product)        {check_s * 1000:8.1f} ms  ({check_s / score_s:.1%})")
    print(
        f"    once per model: its prompts' text      {cold * 1000:8.1f} ms  (then cached, like the findings')"
    )
    print(f"  2048 x 2048 RGB PNG read (baseline)      {read_s * 1000:8.1f} ms")
    print(f"  + colour check                           {colour_s * 1000:8.1f} ms  ({colour_s / read_s:.1%})")
    print(f"  'did you mean' for 10 labels             {suggest_s * 1000:8.1f} ms")
    print(f"  check probability: gray film {p_film:.4f}, colour noise {p_noise:.4f} (random weights)")
    samples = Path(args.samples)
    if samples.is_dir():
        print("  coloured fraction of the real films in", samples)
        for path in sorted(samples.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                with Image.open(path) as image:
                    fraction = coloured_fraction(np.asarray(image.convert("RGB")))
                    print(f"    {path.name:<40} {image.mode:<4} {fraction:.4f}")


if __name__ == "__main__":
    main()
