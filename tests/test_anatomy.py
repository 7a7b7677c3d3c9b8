"""The anatomy stage's geometry on generated films with known lung fields (two dark ellipses in a brighter
body): region naming by the lungs (hand-placed boxes), the chest-film check, the CTR estimate, the faint lung
outlines on overlays. The lung-field network itself is tested in tests/test_anatomy_model.py."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.anatomy import ctr, naming, network, plausibility
from meddx.anatomy.fields import LEFT, RIGHT, from_masks
from meddx.anatomy.reading import from_fields
from meddx.explain.overlay import overlay
from meddx.explain.regions import find_regions

H, W = 400, 360
RIGHT_LUNG = (110, 180, 60, 120)  # centre x, centre y, semi-axes: the patient's right, on the image's left
LEFT_LUNG = (250, 180, 60, 120)


def ellipse(cx: float, cy: float, ax: float, ay: float, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 < 1.0


def chest(shape=(H, W), seed: int = 0):
    """A generated frontal film: dark background, brighter body, two dark lung fields; and their masks."""
    scale_y, scale_x = shape[0] / H, shape[1] / W
    right = ellipse(RIGHT_LUNG[0] * scale_x, RIGHT_LUNG[1] * scale_y, RIGHT_LUNG[2] * scale_x,
                    RIGHT_LUNG[3] * scale_y, shape)  # fmt: skip
    left = ellipse(LEFT_LUNG[0] * scale_x, LEFT_LUNG[1] * scale_y, LEFT_LUNG[2] * scale_x,
                   LEFT_LUNG[3] * scale_y, shape)  # fmt: skip
    film = np.full(shape, 30.0)
    film[int(15 * scale_y) : int(390 * scale_y), int(20 * scale_x) : int(340 * scale_x)] = 170.0
    film[right | left] = 60.0
    film += np.random.default_rng(seed).normal(0, 4, shape)
    return np.clip(film, 0, 255).astype(np.uint8), right, left


@pytest.fixture(scope="module")
def anatomy():
    film, right, left = chest()
    image = network.prepare(film)[0, 0].numpy()
    return from_fields(from_masks(right, left), image, "PA")


@pytest.mark.parametrize(
    ("box", "words", "in_lungs"),
    [
        ([90, 240, 130, 280], "right lung, lower zone", True),  # the image's left is the patient's right
        ([230, 70, 280, 120], "left lung, upper zone", True),
        ([100, 150, 260, 210], "both lungs, middle zones", True),
        ([60, 70, 160, 290], "right lung, all zones", True),
        ([5, 5, 25, 25], "outside the lungs: film edge or marker", False),  # a burned-in corner marker
        ([150, 330, 210, 375], "outside the lungs: below the diaphragm", False),
        ([160, 5, 200, 40], "outside the lungs: above the lungs", False),
        ([165, 200, 185, 260], "outside the lungs: mediastinum/heart", False),
    ],
)
def test_regions_are_named_by_the_lungs(anatomy, box, words, in_lungs):
    found = anatomy.locate(box, H, W)
    assert (found.text, found.in_lungs) == (words, in_lungs)


def test_naming_does_not_depend_on_the_film_size():
    film, right, left = chest((1200, 1080))
    image = network.prepare(film)[0, 0].numpy()
    big = from_fields(from_masks(right, left), image, None)
    assert big.locate([270, 720, 390, 840], 1200, 1080).text == "right lung, lower zone"
    assert big.locate([15, 15, 75, 75], 1200, 1080).text == "outside the lungs: film edge or marker"


def test_find_regions_names_map_regions_by_the_lungs_and_says_which_are_outside(anatomy):
    heatmap = np.zeros((H, W), np.float32)
    heatmap[240:280, 90:130] = 1.0  # right lower zone
    heatmap[5:25, 5:25] = 1.0  # the corner marker
    regions = find_regions(heatmap, lungs=anatomy)
    named = {r.location: r.in_lungs for r in regions}
    assert named == {"right lung, lower zone": True, "outside the lungs: film edge or marker": False}
    assert all(r.to_dict()["in_lungs"] is not None for r in regions)
    framed = find_regions(heatmap)  # no lung fields: named by the film's frame, in_lungs unknown
    assert all(r.in_lungs is None for r in framed)
    lateral = find_regions(heatmap, lungs=anatomy, view_position="LL")  # the lungs' model is frontal only
    assert all(r.in_lungs is None and "lateral" in r.location for r in lateral)


def test_a_generated_chest_film_is_plausible(anatomy):
    assert anatomy.check.plausible and anatomy.chest_film and anatomy.lungs
    assert anatomy.warnings() == []


def _check(right: np.ndarray, left: np.ndarray, film: np.ndarray):
    return plausibility.check(from_masks(right, left), network.prepare(film)[0, 0].numpy())


def test_implausible_lung_fields_give_a_warning():
    film, right, left = chest()
    none = np.zeros_like(right)
    assert "no left lung" in _check(right, none, film).reasons
    swapped = _check(left, right, film)  # the "right" lung on the image's right
    assert "the lungs are not on their own sides" in swapped.reasons
    inverted = _check(right, left, 255 - film)  # lung-shaped fields where the image is bright
    assert "right lung is brighter than its surroundings" in inverted.reasons
    tiny = _check(ellipse(110, 180, 6, 8), ellipse(250, 180, 6, 8), film)
    assert any("covers" in r for r in tiny.reasons)
    broken = np.zeros_like(right)
    broken[60:300:20, 50:170] = True  # stripes: no lung shape
    warning = _check(broken, left, film).warning()
    assert warning.startswith("This may not be a frontal chest X-ray: no plausible pair of lung fields")


def _rectangles(notch: int = 0):
    right = np.zeros((H, W), bool)
    left = np.zeros((H, W), bool)
    right[50:350, 40:140] = True
    left[50:350, 220:320] = True
    if notch:  # the heart's left border bulging into the left lung's lower half
        left[250:330, 220 : 220 + notch] = False
    return from_masks(right, left)


def test_ctr_is_the_widest_gap_in_the_lower_half_over_the_widest_outer_distance():
    plain = ctr.estimate(_rectangles(), "PA")
    assert plain.ratio == pytest.approx(80 / 280, abs=0.02)
    bulging = ctr.estimate(_rectangles(notch=30), "PA")
    assert bulging.ratio == pytest.approx(110 / 280, abs=0.02)
    assert bulging.text() == (
        f"CTR ≈ {bulging.ratio:.2f} (estimated from the lung outlines; > 0.5 suggests an enlarged heart on a "
        "PA film; not valid on AP films)"
    )
    assert bulging.to_dict()["valid"] and bulging.to_dict()["value"] == round(bulging.ratio, 3)


@pytest.mark.parametrize("view", ["AP", "AP SUPINE", None, ""])
def test_ctr_is_not_valid_on_ap_or_unknown_views(view):
    found = ctr.estimate(_rectangles(), view)
    assert not found.valid_view and found.to_dict()["value"] is None
    assert "valid only on a PA frontal film" in found.text()
    assert ("unknown" in found.text()) == (not view)


def test_the_ctr_goes_beside_cardiomegaly_only_with_plausible_lungs(anatomy):
    assert anatomy.measurements()["cardiomegaly"].startswith("CTR ≈ ")
    film, right, left = chest()
    implausible = from_fields(from_masks(right, left), network.prepare(255 - film)[0, 0].numpy(), "PA")
    assert implausible.measurements() == {} and implausible.to_dict()["ctr"] is None
    assert implausible.locate([90, 240, 130, 280], H, W) is None  # regions fall back to the frame's words


def test_overlays_draw_the_lung_outlines_faintly(anatomy):
    film, _, _ = chest()
    lines = anatomy.outline(H, W)
    assert lines.any() and lines.mean() < 0.05
    assert lines[180, 50] or lines[180, 51] or lines[180, 49]  # the right lung's outer edge
    heatmap = np.zeros((H, W), np.float32)
    plain, outlined = overlay(film, heatmap), overlay(film, heatmap, outline=lines)
    assert np.array_equal(plain[~lines], outlined[~lines])
    brighter = outlined[lines].astype(int) - plain[lines].astype(int)
    assert (brighter > 0).all() and (outlined[lines] < 255).any()  # faint: lifted towards white, not white


def test_fields_resize_to_any_film_size(anatomy):
    masks = anatomy.fields.masks(800, 720)
    assert masks.shape == (800, 720) and set(np.unique(masks)) == {0, 1, 2}
    assert masks[360, 220] == 1 and masks[360, 500] == 2  # right lung on the image's left
    assert anatomy.fields.lung(RIGHT).sum() > 0 and anatomy.fields.lung(LEFT).sum() > 0


def test_outside_names_are_never_lung_locations(anatomy):
    for box in ([5, 5, 25, 25], [150, 330, 210, 375], [160, 5, 200, 40], [165, 200, 185, 260]):
        found = anatomy.locate(box, H, W)
        assert not found.in_lungs and found.text.startswith(naming.OUTSIDE)
