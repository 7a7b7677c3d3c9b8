"""Attribution maps: hand-computed Captum values on hand-built modules, alignment on the original film,
overlays, thread safety, and the evidence that the maps mean something on the planted tiny model."""

from __future__ import annotations

import base64
import dataclasses
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from meddx.explain.maps import METHODS, AttributionInputs, film_maps, normalise
from meddx.explain.overlay import FilmMap, heatmap_png, overlay, to_png_base64
from meddx.model.geometry import Geometry
from meddx.model.scored import ScoredImage


def on_film(maps: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """The first of the raw square maps, normalised and put on the film at full size."""
    return FilmMap(normalise(maps)[0], geometry).on_film()


def explain(encoder, scored: ScoredImage, targets: list[int], **kwargs) -> list[np.ndarray]:
    """`film_maps`, each put on the film at full size."""
    return [m.on_film() for m in film_maps(encoder, scored, targets, **kwargs)]


def hand_scored(tokens: torch.Tensor, tail: nn.Module, geometry: Geometry) -> ScoredImage:
    """A scoring pass by hand: these stem tokens and tail, a blank model input, this geometry."""
    return ScoredImage(torch.zeros(3, S, S), geometry, tokens, tail, torch.zeros(1))


S, PATCH, GRID = 48, 8, 6  # a hand-built "model input": 48 px, 8-px patches, a 6x6 token grid
WIDE = Geometry(width=150, height=100, pad_left=0, pad_top=25, side=150, size=S)
TALL = Geometry(width=100, height=150, pad_left=25, pad_top=0, side=150, size=S)


class LinearTail(nn.Module):
    """Tokens (N, 1 + 36, C) -> logits (N, F) = sum over (C, H, W) of weight[f] * grid: a linear score."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.grid = nn.Identity()
        self.weight = nn.Parameter(weight, requires_grad=False)  # (F, C, H, W)
        self.difference = torch.zeros(weight.shape[0], 4)
        self.logit_scale = 1.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, _, c = tokens.shape
        grid = self.grid(tokens[:, 1:].transpose(1, 2).reshape(n, c, GRID, GRID))
        return torch.einsum("nchw,fchw->nf", grid, self.weight)


def stub_encoder() -> SimpleNamespace:
    """What `film_maps` reads from an encoder, around a tower that is never called by Grad-CAM."""
    return SimpleNamespace(
        visual=nn.Identity(),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        image_size=S,
        device=torch.device("cpu"),
    )


def expected_position(row: float, col: float, geometry: Geometry) -> tuple[int, int]:
    """Where the centre of model pixel (row, col) lands on the original film: (x, y)."""
    scale = geometry.side / geometry.size
    x = round((col + 0.5) * scale - 0.5) - geometry.pad_left
    y = round((row + 0.5) * scale - 0.5) - geometry.pad_top
    return x, y


def argmax_xy(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


# --- Grad-CAM by hand ---------------------------------------------------------------------------------


def gradcam_by_hand(tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """For a linear score the gradient is the weight: alpha_c = mean_hw weight[c]; cam = relu(sum alpha A)."""
    activations = tokens[0, 1:].T.reshape(-1, GRID, GRID)  # (C, H, W)
    alpha = weight.mean(dim=(2, 3))  # (F, C)
    return torch.relu(torch.einsum("fc,chw->fhw", alpha, activations))


@pytest.fixture
def linear_case():
    torch.manual_seed(0)
    channels = 3
    tokens = 0.1 * torch.rand(1, 1 + GRID * GRID, channels)
    tokens[0, 1 + 3 * GRID + 4] = torch.tensor([2.0, 1.0, 0.5])  # a strong token at row 3, col 4
    tokens[0, 1 + 1 * GRID + 1] = torch.tensor([0.5, 2.0, 0.0])  # another at row 1, col 1
    weight = torch.zeros(2, channels, GRID, GRID)
    weight[0, 0] = 1.0  # finding 0 reads channel 0: the (3, 4) token wins
    weight[1, 1] = 1.0  # finding 1 reads channel 1: the (1, 1) token wins
    return tokens, weight


def test_gradcam_matches_the_hand_computed_map(linear_case):
    tokens, weight = linear_case
    tail = LinearTail(weight)
    inputs = AttributionInputs(None, tokens, tail, None, torch.zeros(1, 3, S, S), [0, 1])
    maps = METHODS["gradcam"]()(inputs)
    torch.testing.assert_close(maps, gradcam_by_hand(tokens, weight))


@pytest.mark.parametrize("geometry", [WIDE, TALL], ids=["landscape", "portrait"])
def test_gradcam_peak_lands_on_the_original_film(linear_case, geometry):
    tokens, weight = linear_case
    maps = explain(stub_encoder(), hand_scored(tokens, LinearTail(weight), geometry), [0, 1])
    assert [m.shape for m in maps] == [(geometry.height, geometry.width)] * 2
    assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() == pytest.approx(1.0) for m in maps)
    centre = (PATCH - 1) / 2  # the centre of a patch, in model pixels from its corner
    assert argmax_xy(maps[0]) == expected_position(3 * PATCH + centre, 4 * PATCH + centre, geometry)
    assert argmax_xy(maps[1]) == expected_position(1 * PATCH + centre, 1 * PATCH + centre, geometry)


def test_map_is_the_upsampled_square_with_the_padding_cropped(linear_case):
    tokens, weight = linear_case
    cam = gradcam_by_hand(tokens, weight)[:1]
    square = nn.functional.interpolate(
        (cam / cam.max())[None], size=(WIDE.side, WIDE.side), mode="bilinear", align_corners=False
    )[0, 0]
    expected = square[WIDE.pad_top : WIDE.pad_top + WIDE.height, :].numpy()
    got = explain(stub_encoder(), hand_scored(tokens, LinearTail(weight), WIDE), [0])[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- Integrated Gradients by hand ---------------------------------------------------------------------


class LinearScorer(nn.Module):
    """Pixels (N, 3, S, S) -> logits (N, 1) = sum(weight * pixels): IG is exactly (x - baseline) * weight."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels * self.weight).sum(dim=(1, 2, 3))[:, None]


@pytest.mark.parametrize("geometry", [WIDE, TALL], ids=["landscape", "portrait"])
def test_integrated_gradients_match_the_hand_computed_map(geometry):
    torch.manual_seed(0)
    weight = 0.01 * torch.rand(3, S, S)
    weight[:, 20, 30] = torch.tensor([1.0, 2.0, 3.0])  # one pixel carries the evidence
    pixels = torch.rand(1, 3, S, S) + 0.5
    baseline = torch.full((1, 3, S, S), -0.5)
    inputs = AttributionInputs(pixels, None, None, LinearScorer(weight), baseline, [0])
    with torch.enable_grad():
        maps = METHODS["integrated_gradients"](n_steps=8)(inputs)
    expected = ((pixels - baseline) * weight).sum(dim=1)  # summed over channels
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    heatmap = on_film(maps, geometry)
    assert heatmap.shape == (geometry.height, geometry.width)
    assert argmax_xy(heatmap) == expected_position(20, 30, geometry)


def test_a_map_without_positive_evidence_is_all_zeros():
    weight = -torch.ones(3, S, S)  # every pixel lowers the score
    inputs = AttributionInputs(
        torch.ones(1, 3, S, S), None, None, LinearScorer(weight), torch.zeros(1, 3, S, S), [0]
    )
    with torch.enable_grad():
        maps = METHODS["integrated_gradients"](n_steps=4)(inputs)
    heatmap = on_film(maps, WIDE)
    assert heatmap.shape == (WIDE.height, WIDE.width) and not heatmap.any()


def test_occlusion_window_is_bounded():
    occlusion = METHODS["occlusion"](patch=16, max_windows=64)
    assert occlusion.window(96) == 16  # 36 windows
    assert occlusion.window(224) == 32  # 196 windows of 16 px would be too many: 49 of 32 px
    assert METHODS["occlusion"](patch=16, max_windows=40).window(224) == 112  # 7 patches tile 224, 3 do not


def test_unknown_method_and_no_targets(linear_case):
    tokens, weight = linear_case
    with pytest.raises(ValueError, match="unknown attribution method"):
        explain(stub_encoder(), hand_scored(tokens, LinearTail(weight), WIDE), [0], method="smoothgrad")
    assert explain(stub_encoder(), hand_scored(tokens, LinearTail(weight), WIDE), []) == []


def test_pixel_methods_need_pixels(linear_case):
    tokens, weight = linear_case
    inputs = AttributionInputs(None, tokens, LinearTail(weight), None, torch.zeros(1, 3, S, S), [0])
    with pytest.raises(ValueError, match="pixels"):
        METHODS["integrated_gradients"]()(inputs)


# --- Overlays -----------------------------------------------------------------------------------------


def test_overlay_keeps_the_film_where_the_map_is_zero():
    gray = np.tile(np.arange(120, dtype=np.uint8), (80, 1))
    heat = np.zeros((80, 120), np.float32)
    heat[20:40, 30:60] = 1.0
    out = overlay(gray, heat, alpha=0.5)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[heat == 0], np.repeat(gray[heat == 0][:, None], 3, axis=1))
    assert (out[heat == 1] != np.repeat(gray[heat == 1][:, None], 3, axis=1)).any()
    with pytest.raises(ValueError, match="does not match"):
        overlay(gray, heat[:10])


def test_png_helpers_round_trip():
    gray = np.full((30, 40), 100, np.uint8)
    heat = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    png = heatmap_png(gray, heat)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, overlay(gray, heat))
    assert base64.b64decode(to_png_base64(gray)).startswith(b"\x89PNG")


# --- The real tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(planted_model_dir):
    from meddx.dev.attribution_check import nodule_directions
    from meddx.model.encoder import load_encoder

    encoder = load_encoder(f"local-dir:{planted_model_dir}")
    return encoder, nodule_directions(encoder)


def _score(planted, film):
    from meddx.dev.attribution_check import score_film

    encoder, directions = planted
    return score_film(encoder, film, directions)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_maps_a_non_square_film(planted, method):
    from meddx.dev.tiny import SyntheticFilm, synthetic_film

    film = synthetic_film(np.random.default_rng(3), size=160, blob=True)
    film = SyntheticFilm(film.pixels[:, 20:140], None)  # 160 high, 120 wide: padded left and right
    scored = _score(planted, film)
    options = {"n_steps": 8} if method == "integrated_gradients" else {}
    maps = explain(planted[0], scored, [0], method=method, **options)
    assert len(maps) == 1 and maps[0].shape == (160, 120) and maps[0].dtype == np.float32
    assert maps[0].min() >= 0.0 and maps[0].max() <= 1.0


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "occlusion", "legrad", "rollout"])
def test_several_targets_in_one_call_match_one_at_a_time(planted, method):
    from meddx.dev.attribution_check import held_out_films, score_film
    from meddx.model.tower import TowerTail

    encoder, directions = planted
    scored = score_film(encoder, held_out_films(1, size=96)[0], directions)
    difference = directions.difference
    tail = TowerTail(
        encoder, torch.cat([difference, -difference]), directions.logit_scale
    )  # and its opposite
    both = dataclasses.replace(scored, tail=tail)
    options = {"n_steps": 8} if method == "integrated_gradients" else {}
    together = explain(encoder, both, [0, 1], method=method, **options)
    for target, heatmap in enumerate(together):
        np.testing.assert_allclose(
            heatmap, explain(encoder, both, [target], method=method, **options)[0], atol=1e-4
        )
    assert not np.allclose(together[0], together[1])


def test_explain_is_thread_safe_and_leaves_no_hooks(planted):
    from meddx.dev.attribution_check import held_out_films

    encoder = planted[0]
    films = held_out_films(4, size=96, seed=7)
    methods = ["gradcam", "integrated_gradients", "legrad", "rollout"]

    def run(film, method):
        scored = _score(planted, film)  # a fresh tail per request, as the pipeline makes one
        options = {"n_steps": 8} if method == "integrated_gradients" else {}
        return explain(encoder, scored, [0], method=method, **options)

    expected = {(i, m): run(f, m)[0] for i, f in enumerate(films) for m in methods}
    results: dict = {}

    def worker(i, method):
        results[i, method] = run(films[i], method)[0]

    threads = [threading.Thread(target=worker, args=(i, m)) for i in range(len(films)) for m in methods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, value in expected.items():
        np.testing.assert_allclose(results[key], value, atol=1e-5)
    for module in encoder.visual.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert all(p.grad is None for p in encoder.model.parameters())


# --- Evidence on the planted tiny model (meddx.dev.attribution_check prints the same numbers) -------------
#
# Issue 17 retired issue 3's 0.90 pointing bar for this CPU-trainable model (a pointing game here says more
# about the fixture than the explainer: any random tower looks at a bright blob). Real maps are measured on
# annotated films with `python -m meddx explain-eval`; the tests below are regression floors: pointing as a
# multiple of chance, the blob-free twins, model randomisation, and deletion and insertion with a blurred
# film (sigma 2 patches) against random patch order, on the model's own 16-px patches (issue 24; docs/maps.md
# has the table). Measured (issue 24, two seeds of 40 films, AUC difference to random order): gradient_shap,
# integrated_gradients (16 steps) and occlusion beat random order on deletion and insertion; gradcam does
# not (deletion +0.03/+0.02, insertion -0.01/-0.01), nor do legrad and rollout on deletion (+0.00/-0.06 and
# +0.02/-0.03), so those are not asserted. Black insertion is uninformative on this model (a black film has no
# nodule).

EVIDENCE_FILMS = 40  # held-out 192-px films (the model reads 96 px, so every map is un-resized)
CHANCE = 0.05  # the planted blob's box covers about 5% of a film
POINTING_FLOOR = {"gradcam": 0.35, "integrated_gradients": 0.60}  # measured: 0.475 and 0.825
POINTING_15PX_FLOOR = {"gradcam": 0.45, "integrated_gradients": 0.60}  # measured: 0.55 and 0.825
RANDOMISATION_LIMIT = 0.3


@pytest.fixture(scope="module")
def evidence(planted):
    from meddx.dev.attribution_check import evaluate, held_out_films

    results = evaluate(planted[0], held_out_films(EVIDENCE_FILMS), tuple(METHODS))
    return {r.method: r for r in results}


def test_the_planted_model_reads_the_blob(planted):
    """The premise of the pointing game: the same films without their blob lose their nodule score."""
    from meddx.dev.attribution_check import blob_free_twins, held_out_films, nodule_probability

    films, twins = held_out_films(EVIDENCE_FILMS), blob_free_twins(EVIDENCE_FILMS)
    assert all(
        np.array_equal(f.pixels, t.pixels) == (f.box is None) for f, t in zip(films, twins, strict=True)
    )
    changed = [(f.pixels != t.pixels).mean() for f, t in zip(films, twins, strict=True)]
    assert min(changed) > 0 and max(changed) < 0.1  # only the blob's pixels differ
    with_blob, without = nodule_probability(planted[0], films), nodule_probability(planted[0], twins)
    assert with_blob.mean() > 0.7 and without.mean() < 0.3  # measured: 0.853 and 0.106
    assert np.mean(with_blob - without > 0.5) >= 0.8  # measured: 0.88


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_pointing_game(evidence, method):
    """The map's maximum falls in the planted blob's box (integrated_gradients with 16 steps, not 50)."""
    result = evidence[method]
    assert result.pointing >= POINTING_FLOOR[method] > CHANCE, result
    assert result.pointing_15px >= POINTING_15PX_FLOOR[method], result


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_model_randomisation(evidence, method):
    """Adebayo et al. (2018): a map must change when the image tower's weights are re-initialised."""
    assert evidence[method].randomisation_rho < RANDOMISATION_LIMIT, evidence[method]


PASSES_DELETION_AND_INSERTION = ["gradient_shap", "integrated_gradients", "occlusion"]


@pytest.mark.slow
@pytest.mark.parametrize("method", PASSES_DELETION_AND_INSERTION)
def test_deletion_and_insertion_beat_random_order(evidence, method):
    """Blurring the most-attributed patches first lowers the score faster than random order, and putting
    them back first onto the blurred film raises it faster; blacking them out also lowers it faster."""
    result = evidence[method]
    assert result.beats_random_order(), result
    assert result.areas["black_deletion"] < result.random_areas["black_deletion"], result


def test_evidence_report_text():
    from meddx.dev.attribution_check import Evidence, Interval, format_report

    areas = {"deletion": 0.70, "insertion": 0.78, "black_deletion": 0.05, "black_insertion": 0.001}
    chance = {"deletion": 0.76, "insertion": 0.69, "black_deletion": 0.06, "black_insertion": 0.001}
    passing = Evidence(
        "legrad", 7, 2, 0.5, 0.6, 0.3, 0.1, 0.05, 0.04,
        Interval(-0.06, -0.08, -0.03), Interval(0.09, 0.05, 0.12), areas, chance, 0.004,
    )  # fmt: skip
    failing = Evidence(
        "gradcam", 7, 2, 0.5, 0.6, 0.3, 0.1, 0.05, 0.04,
        Interval(-0.03, -0.05, 0.01), Interval(0.09, 0.05, 0.12), areas, chance, 0.004,
    )  # fmt: skip
    text = format_report([passing, failing], np.array([0.9, 0.8]), np.array([0.1, 0.5]), size=192)
    lines = text.splitlines()
    assert lines[0].startswith("2 held-out 192-px films per seed") and "blur sigma 2 patch" in lines[0]
    assert "with the blob 0.850, same films without it 0.300 (falls by > 0.5 on 50% of films)" in lines[1]
    assert lines[2].split() == [
        "method", "seed", "point", "energy", "rand.rho", "rand.pt", "del.blur", "rnd", "ins.blur", "rnd",
        "del.black", "rnd", "test",
    ]  # fmt: skip
    assert lines[3].split() == [
        "legrad", "7", "0.500", "0.300", "0.100", "0.050", "0.700", "0.760", "0.780", "0.690", "0.050",
        "0.060", "PASS",
    ]  # fmt: skip
    assert "deletion - rnd -0.060 [-0.080, -0.030]   insertion - rnd +0.090 [+0.050, +0.120]" in lines[4]
    assert lines[5].split()[-1] == "fail"  # the deletion interval reaches zero
    assert passing.passes() and not failing.beats_random_order()
    assert not dataclasses.replace(passing, randomised_pointing=0.6).passes()  # did not fall
    assert not dataclasses.replace(passing, insertion=Interval(0.015, 0.01, 0.02)).passes()  # below 0.02


def test_paired_interval_by_hand():
    from meddx.dev.faithfulness import energy_in_box, paired_interval

    mean, low, high = paired_interval(np.array([0.5, 0.5, 0.5]), np.array([0.6, 0.6, 0.6]))
    assert (mean, low, high) == pytest.approx((-0.1, -0.1, -0.1))
    mean, low, high = paired_interval(np.array([0.0, 1.0]), np.zeros(2), resamples=2000)
    assert mean == 0.5 and low == 0.0 and high == 1.0
    heatmap = np.zeros((10, 10))
    heatmap[2:4, 2:4], heatmap[8, 8] = 1.0, 4.0
    assert energy_in_box(heatmap, (2, 2, 4, 4)) == 0.5 and energy_in_box(np.zeros((3, 3)), (0, 0, 1, 1)) == 0


def test_deletion_and_insertion_curves_by_hand():
    """A scorer that reads only the top-left patch: deleting it first drops the score at once."""
    from meddx.dev.faithfulness import blurred, curve_area, deletion_curve, insertion_curve

    class TopLeft(nn.Module):
        def forward(self, pixels):
            return 10 * (pixels[:, 0, :4, :4].mean(dim=(1, 2)) - 0.5)[:, None]

    pixels, black = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    first, last = np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0])  # 2 x 2 grid of 4-px patches
    high, low = float(torch.sigmoid(torch.tensor(5.0))), float(torch.sigmoid(torch.tensor(-5.0)))
    np.testing.assert_allclose(deletion_curve(TopLeft(), pixels, black, first), [high, low, low, low, low])
    np.testing.assert_allclose(deletion_curve(TopLeft(), pixels, black, last), [high, high, high, high, low])
    np.testing.assert_allclose(
        insertion_curve(TopLeft(), pixels, black, first), [low, high, high, high, high]
    )
    np.testing.assert_allclose(deletion_curve(TopLeft(), pixels, black, first, steps=2), [high, low, low])
    assert curve_area(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)
    smooth = blurred(pixels.clone(), patch=4)
    torch.testing.assert_close(smooth, pixels)  # a flat film stays flat (reflected border)


def test_checked_variants_name_their_layers(planted):
    """``legrad@3`` is LeGrad over the last 3 layers; an unknown name is refused with the choices."""
    from meddx.dev.attribution_check import film_map, held_out_films, method_and_options

    assert method_and_options("legrad@3") == ("legrad", {"layers": 3})
    assert method_and_options("integrated_gradients") == ("integrated_gradients", {"n_steps": 16})
    with pytest.raises(ValueError, match="unknown attribution method 'smoothgrad'"):
        method_and_options("smoothgrad")
    scored = _score(planted, held_out_films(1, size=96)[0])
    one, three = (film_map(planted[0], scored, "legrad", layers=k) for k in (1, 3))
    assert one.shape == three.shape == (96, 96) and not np.allclose(one, three)


def test_gradient_shap_gives_the_same_map_every_time_and_leaves_the_global_generators_alone(planted):
    """Captum draws from the global generators: meddx seeds them for the call and restores them after, so
    a film's map does not depend on what ran before, and nothing else's random draws change."""
    from meddx.dev.tiny import synthetic_film
    from meddx.explain.maps import attribute

    encoder, _ = planted
    scored = _score(planted, synthetic_film(np.random.default_rng(5), size=128, blob=True))
    np.random.seed(123)
    torch.manual_seed(123)
    expected_numpy, expected_torch = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    first = attribute(encoder, scored, [0], method="gradient_shap", n_samples=4)
    assert (np.random.get_state()[1] == expected_numpy).all()
    assert torch.equal(torch.get_rng_state(), expected_torch)
    np.random.uniform(size=100)  # whatever ran before must not matter
    torch.rand(100)
    second = attribute(encoder, scored, [0], method="gradient_shap", n_samples=4)
    assert torch.equal(first, second)
