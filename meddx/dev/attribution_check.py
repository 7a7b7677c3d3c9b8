"""Evidence that the attribution maps mean something, measured on the planted tiny model.

Run ``python -m meddx attribution-check`` (`run_check`) to build a tiny model, teach it that a bright blob
is a lung nodule (`meddx.dev.tiny.train_planted_signal`), and print, for every method side by side, on two
seeds of held-out films (`SEEDS`):

0. **The model's evidence is the blob**: the nodule probability of each held-out film against that of the
   same film drawn without its blob (`blob_free_twins`). The explainers are judged on this model only
   because removing the blob, and nothing else, takes its nodule score away.
1. **Pointing game** and **energy in box** on the planted blob's box.
2. **Model randomisation** (Adebayo et al., 2018): the Spearman correlation between the trained model's
   map and the map of a copy whose image tower has random weights (low is good), and the randomised
   model's pointing (it should fall towards chance, about the box's 5 % share of the film).
3. **Deletion and insertion** on a blurred film against random patch order (`meddx.dev.faithfulness`),
   each as the mean per-film AUC difference to random order with a bootstrap 95 % interval.

The test (`Evidence.passes`): deletion at least `MARGIN` below random order and insertion at least
`MARGIN` above it, each interval excluding zero, and the map falls with the randomised model
(`Evidence.falls`). Time per map on BiomedCLIP's architecture is measured by `meddx.dev.map_timing`.
Patches are the model's own (`meddx.model.vision.VisionTower.grid`); until issue 24 the check read timm's
stale ``patch_embed.grid_size`` (10 for the tiny tower built at 160 px and run at 96), i.e. 9-px squares
that left the last 6 rows and columns of the input untouched.

The tests in ``tests/test_attribution.py`` call the same functions.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddx.dev.faithfulness import (
    BLUR_SIGMA_PATCHES,
    CURVES,
    blurred,
    curve_areas,
    energy_in_box,
    paired_interval,
    patch_order,
    pointing_hit,
    randomised_copy,
    rank_correlation,
)
from meddx.dev.tiny import PLANTED_FINDING, SyntheticFilm, synthetic_film
from meddx.explain.maps import METHODS, ImageScorer, black_baseline, film_maps
from meddx.model.encoder import Encoder
from meddx.model.scored import ScoredImage, score_image
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import TextDirections, text_directions

log = logging.getLogger(__name__)

EVAL_SEED = 20240611  # held out: training draws its films from seed 0
SEEDS = (EVAL_SEED, EVAL_SEED + 1)
CHECK_OPTIONS: dict[str, dict] = {"integrated_gradients": {"n_steps": 16}}  # fewer steps than the default 50
VARIANTS: dict[str, tuple[str, dict]] = {
    "legrad@3": ("legrad", {"layers": 3}),
    "rollout@3": ("rollout", {"layers": 3}),
}
CHECK_METHODS = (
    "gradcam",
    "legrad",
    "legrad@3",
    "rollout",
    "rollout@3",
    "gradient_shap",
    "integrated_gradients",
    "occlusion",
)
POINTING_TOLERANCE = 15.0  # pixels, as in Zhang et al. (2018)
RANDOM_ORDERS = 3
MARGIN = 0.02  # AUC by which deletion and insertion must beat random order
RANDOMISATION_LIMIT = 0.3  # the largest mean rank correlation with the randomised model's maps


def method_and_options(name: str) -> tuple[str, dict]:
    """A checked method's `METHODS` key and options: ``legrad@3`` is LeGrad over the last 3 layers."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name not in METHODS:
        raise ValueError(
            f"unknown attribution method {name!r}; choose one of {sorted(METHODS) + sorted(VARIANTS)}"
        )
    return name, CHECK_OPTIONS.get(name, {})


def held_out_films(count: int, *, size: int = 192, seed: int = EVAL_SEED) -> list[SyntheticFilm]:
    """Synthetic films with a planted blob, drawn from a seed training never uses."""
    rng = np.random.default_rng(seed)
    return [synthetic_film(rng, size=size, blob=True) for _ in range(count)]


def blob_free_twins(count: int, *, size: int = 192, seed: int = EVAL_SEED) -> list[SyntheticFilm]:
    """The films of `held_out_films` drawn again without their blob: the same film, nothing else changed."""
    rng = np.random.default_rng(seed)
    twins = []
    for _ in range(count):
        before = copy.deepcopy(rng.bit_generator.state)
        synthetic_film(rng, size=size, blob=True)
        after = copy.deepcopy(rng.bit_generator.state)
        rng.bit_generator.state = before
        twins.append(synthetic_film(rng, size=size, blob=False))  # the blob is drawn last: same background
        rng.bit_generator.state = after
    return twins


def nodule_directions(encoder: Encoder) -> TextDirections:
    """The planted finding's text directions (memory only: a throwaway model's are never cached on disk)."""
    return text_directions(encoder, [load_vocabulary().finding(PLANTED_FINDING)])


def score_film(encoder: Encoder, film: SyntheticFilm, directions: TextDirections) -> ScoredImage:
    """The pipeline's scoring pass (`meddx.model.scored.score_image`), on a bare film."""
    return score_image(encoder, Image.fromarray(film.pixels).convert("RGB"), directions)


def film_map(encoder: Encoder, scored: ScoredImage, method: str, **options) -> np.ndarray:
    """The nodule map of one scored film."""
    [nodule] = film_maps(encoder, scored, [0], method=method, **options)
    return nodule.on_film()


def nodule_probability(encoder: Encoder, films: Sequence[SyntheticFilm]) -> np.ndarray:
    """The planted finding's zero-shot probability for each film."""
    directions = nodule_directions(encoder)
    scorer = ImageScorer(encoder.visual, directions.difference, directions.logit_scale)
    pixels = torch.stack([encoder.preprocess(Image.fromarray(f.pixels).convert("RGB"))[0] for f in films])
    with torch.inference_mode():
        return torch.sigmoid(scorer(pixels)[:, 0]).numpy()


@dataclass(frozen=True)
class Interval:
    """A mean per-film difference to random order and its bootstrap 95 % interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


@dataclass(frozen=True)
class Evidence:
    """One method's numbers on one seed of films (module docstring); AUCs are of the probability curve.

    ``areas`` and ``random_areas`` hold the mean AUC of each of `meddx.dev.faithfulness.CURVES` for the
    map's order and random order; ``deletion`` and ``insertion`` the paired differences (blurred film).
    """

    method: str
    seed: int
    films: int
    pointing: float
    pointing_15px: float
    energy: float
    randomisation_rho: float
    randomised_pointing: float
    randomised_energy: float
    deletion: Interval
    insertion: Interval
    areas: dict[str, float]
    random_areas: dict[str, float]
    seconds_per_map: float

    def beats_random_order(self) -> bool:
        """Deletion >= `MARGIN` below and insertion >= `MARGIN` above random order, intervals excluding 0."""
        deletion, insertion = self.deletion, self.insertion
        return (
            deletion.mean <= -MARGIN and deletion.high < 0 and insertion.mean >= MARGIN and insertion.low > 0
        )

    def falls(self) -> bool:
        """The map changes with a randomised tower and points less often at the blob."""
        return self.randomisation_rho < RANDOMISATION_LIMIT and self.randomised_pointing < self.pointing

    def passes(self) -> bool:
        """The issue-24 test on this seed: `beats_random_order` and `falls`."""
        return self.beats_random_order() and self.falls()


def evaluate(
    encoder: Encoder,
    films: Sequence[SyntheticFilm],
    methods: Sequence[str] = CHECK_METHODS,
    *,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> list[Evidence]:
    """Pointing, energy, randomisation, deletion and insertion for each method on the films.

    The random-order AUCs are measured once (``random_orders`` orders per film) and shared by all methods.
    """
    directions = nodule_directions(encoder)
    randomised = randomised_copy(encoder, seed=seed)
    scorer = ImageScorer(encoder.visual, directions.difference, directions.logit_scale)
    black = black_baseline(encoder)
    tower = encoder.tower
    grid, patch = tower.grid, tower.patch
    rng = np.random.default_rng(seed)
    scored = [score_film(encoder, f, directions) for f in films]
    blurs = [blurred(s.pixels, patch) for s in scored]
    scored_random = [score_film(randomised, f, directions) for f in films]
    boxes = [f.box for f in films]

    def areas(index: int, order: np.ndarray) -> dict[str, float]:
        return curve_areas(scorer, scored[index].pixels, blurs[index], black, order)

    chance = [
        _mean_areas([areas(i, rng.permutation(grid**2)) for _ in range(random_orders)])
        for i in range(len(films))
    ]
    results = []
    for name in methods:
        method, options = method_and_options(name)
        start = time.perf_counter()
        maps = [film_map(encoder, s, method, **options) for s in scored]
        seconds = (time.perf_counter() - start) / len(scored)
        random_maps = [film_map(randomised, s, method, **options) for s in scored_random]
        ranked = [
            areas(i, patch_order(m, s.geometry, grid, rng))
            for i, (m, s) in enumerate(zip(maps, scored, strict=True))
        ]

        def interval(curve: str, ranked=ranked) -> Interval:
            values = [r[curve] for r in ranked]
            return Interval(*paired_interval(values, [c[curve] for c in chance], seed=seed))

        pairs = list(zip(maps, boxes, strict=True))
        results.append(
            Evidence(
                method=name,
                seed=seed,
                films=len(films),
                pointing=_mean(pointing_hit(m, box) for m, box in pairs),
                pointing_15px=_mean(pointing_hit(m, box, tolerance=POINTING_TOLERANCE) for m, box in pairs),
                energy=_mean(energy_in_box(m, box) for m, box in pairs),
                randomisation_rho=_mean(
                    rank_correlation(a, b) for a, b in zip(maps, random_maps, strict=True)
                ),
                randomised_pointing=_mean(
                    pointing_hit(m, box) for m, box in zip(random_maps, boxes, strict=True)
                ),
                randomised_energy=_mean(
                    energy_in_box(m, box) for m, box in zip(random_maps, boxes, strict=True)
                ),
                deletion=interval("deletion"),
                insertion=interval("insertion"),
                areas=_mean_areas(ranked),
                random_areas=_mean_areas(chance),
                seconds_per_map=seconds,
            )
        )
        log.info("%s (seed %d): %.1f s", name, seed, time.perf_counter() - start)
    return results


def _mean_areas(areas: list[dict[str, float]]) -> dict[str, float]:
    return {name: _mean(a[name] for a in areas) for name in CURVES}


def _mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))


COLUMNS = (
    "seed",
    "point",
    "energy",
    "rand.rho",
    "rand.pt",
    "del.blur",
    "rnd",
    "ins.blur",
    "rnd",
    "del.black",
    "rnd",
    "test",
)


def format_report(
    results: Sequence[Evidence], with_blob: np.ndarray, without: np.ndarray, *, size: int
) -> str:
    """The evidence as a plain-text table, after the blob-dependence line: one row per method and seed.

    ``del.blur`` / ``ins.blur``: the map order's AUC and, below the row, its difference to random order
    (``rnd``) with the bootstrap interval; "test" is PASS when `Evidence.passes`.
    """
    films = results[0].films if results else 0
    lines = [
        f"{films} held-out {size}-px films per seed with a planted blob; options {CHECK_OPTIONS}; blur sigma "
        f"{BLUR_SIGMA_PATCHES:g} patch; deletion: lower than rnd is good, insertion: higher; test: both beat "
        f"rnd by >= {MARGIN}, interval excluding 0; rand.rho < {RANDOMISATION_LIMIT}; rand.pt < point",
        f"nodule probability with the blob {with_blob.mean():.3f}, same films without it {without.mean():.3f}"
        f" (falls by > 0.5 on {np.mean(with_blob - without > 0.5):.0%} of films)",
        f"{'method':<22}" + "".join(f"{c:>10}" for c in COLUMNS),
    ]
    for r in results:
        a, rnd = r.areas, r.random_areas
        values = (
            r.pointing, r.energy, r.randomisation_rho, r.randomised_pointing, a["deletion"], rnd["deletion"],
            a["insertion"], rnd["insertion"], a["black_deletion"], rnd["black_deletion"],
        )  # fmt: skip
        verdict = "PASS" if r.passes() else "fail"
        lines.append(
            f"{r.method:<22}{r.seed:>10}" + "".join(f"{v:>10.3f}" for v in values) + f"{verdict:>10}"
        )
        lines.append(f"{'':<22}{'':>10}  deletion - rnd {r.deletion}   insertion - rnd {r.insertion}")
    return "\n".join(lines)


def planted_encoder(folder: Path, *, steps: int = 120) -> Encoder:
    """Build and train the planted tiny model in ``folder``; the loaded encoder."""
    from meddx.dev.tiny import make_tiny_model, train_planted_signal
    from meddx.model.encoder import build_encoder
    from meddx.model.spec import ModelSpec, resolve

    folder = make_tiny_model(folder, seed=0)
    start = time.perf_counter()
    train_planted_signal(folder, seed=0, steps=steps)
    log.info("trained the planted tiny model (%d steps) in %.0f s", steps, time.perf_counter() - start)
    return build_encoder(resolve(ModelSpec("local-dir", str(folder))))


def run_check(
    *,
    images: int = 40,
    size: int = 192,
    steps: int = 120,
    seeds: Sequence[int] = SEEDS,
    methods: Sequence[str] = CHECK_METHODS,
) -> tuple[str, list[Evidence]]:
    """Train the planted tiny model in a temp folder; the evidence table as text, and the evidence."""
    with tempfile.TemporaryDirectory() as tmp:
        encoder = planted_encoder(Path(tmp) / "planted", steps=steps)
        results, with_blob, without = [], [], []
        for seed in seeds:
            films = held_out_films(images, size=size, seed=seed)
            with_blob.append(nodule_probability(encoder, films))
            without.append(nodule_probability(encoder, blob_free_twins(images, size=size, seed=seed)))
            results += evaluate(encoder, films, methods, seed=seed)
    results.sort(key=lambda r: (list(methods).index(r.method), r.seed))
    return format_report(results, np.concatenate(with_blob), np.concatenate(without), size=size), results
