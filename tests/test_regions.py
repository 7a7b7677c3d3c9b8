"""Regions of synthetic maps: boxes, scores, merging, thresholds and location words."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.explain.regions import (
    UNKNOWN_VIEW_NOTE,
    Region,
    describe_location,
    find_regions,
    location_note,
    threshold,
    view_kind,
)

H, W = 300, 240  # a portrait film


def blob_map(
    *centres: tuple[int, int, float], sigma: float = 8.0, shape: tuple[int, int] = (H, W)
) -> np.ndarray:
    """A map with Gaussian peaks at (x, y) of the given heights, scaled to a maximum of 1."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    heat = np.zeros(shape, np.float32)
    for x, y, height in centres:
        heat += height * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return heat / heat.max()


def test_one_peak_gives_one_box_around_it():
    regions = find_regions(blob_map((60, 150, 1.0)), view_position="PA")
    assert len(regions) == 1
    x0, y0, x1, y1 = regions[0].box
    assert x0 < 60 < x1 and y0 < 150 < y1
    assert x1 - x0 < 40 and y1 - y0 < 40
    assert regions[0].score == pytest.approx(1.0)


def test_box_is_end_exclusive_in_original_pixels():
    heat = np.zeros((H, W), np.float32)
    heat[100:120, 30:50] = 1.0
    heat[0, 0] = 0.01  # a second level, so that Otsu has something to separate
    assert find_regions(heat)[0].box == [30, 100, 50, 120]


@pytest.mark.parametrize("view", ["PA", "AP", None, "", "weird"])
def test_image_left_is_the_patients_right_on_frontal_and_unknown_views(view):
    regions = find_regions(blob_map((40, 150, 1.0)), view_position=view)
    assert regions[0].location == "right middle zone"
    mirrored = find_regions(blob_map((W - 40, 150, 1.0)), view_position=view)
    assert mirrored[0].location == "left middle zone"


def test_lateral_view_gives_no_side():
    for view in ("LL", "RL", "LATERAL", "lat"):
        location = find_regions(blob_map((40, 150, 1.0)), view_position=view)[0].location
        assert location == "middle zone on the lateral view"
        assert "left" not in location and "right" not in location


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (50, 20, "right upper zone (apical)"),
        (50, 70, "right upper zone"),
        (190, 230, "left lower zone"),
        (70, 280, "right lower zone (basal)"),
        (20, 280, "right lower zone (costophrenic angle)"),
        (120, 150, "central (perihilar)"),
        (120, 60, "central upper zone"),
    ],
)
def test_zone_words(x, y, expected):
    assert find_regions(blob_map((x, y, 1.0), sigma=5), view_position="PA")[0].location == expected


def test_lateral_basal_region_is_not_called_costophrenic():
    assert describe_location([0, 270, 30, 300], (0, 0, W, H), view_position="LL") == (
        "lower zone (basal) on the lateral view"
    )


def test_a_box_spanning_both_sides_is_bilateral():
    heat = np.zeros((H, W), np.float32)
    heat[200:240, 40:200] = 1.0
    heat[0, 0] = 0.1
    assert find_regions(heat, view_position="PA")[0].location == "bilateral lower zones"


def test_field_box_changes_the_frame():
    # Centred in the image, but in the left half of a field that covers the image's right part.
    assert (
        describe_location([110, 140, 130, 160], (100, 0, 240, 300), view_position="PA") == "right middle zone"
    )


def test_view_kind_and_note():
    assert view_kind("PA") == view_kind("ap supine") == "frontal"
    assert view_kind("LL") == view_kind("LATERAL") == "lateral"
    assert view_kind(None) == view_kind("") == view_kind("LLD") == "unknown"
    assert location_note(None) == UNKNOWN_VIEW_NOTE
    assert location_note("PA") is None and location_note("LL") is None


def test_regions_are_sorted_by_peak_and_capped():
    heat = blob_map((40, 50, 0.5), (200, 60, 1.0), (40, 250, 0.8), (200, 250, 0.7), sigma=6)
    regions = find_regions(heat, percentile=50)
    assert [r.location for r in regions] == ["left upper zone", "right lower zone", "left lower zone"]
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    assert len(find_regions(heat, percentile=50, max_regions=1)) == 1


def test_nearby_boxes_merge_and_tiny_ones_are_dropped():
    heat = np.zeros((H, W), np.float32)
    heat[100:130, 50:80] = 1.0
    heat[100:130, 82:100] = 0.9  # 2 px away: merged
    heat[10:12, 200:202] = 1.0  # 4 px: below 0.1% of the image, dropped
    regions = find_regions(heat, percentile=5)
    assert [r.box for r in regions] == [[50, 100, 100, 130]]
    assert regions[0].score == pytest.approx(1.0)


def test_threshold_is_otsu_or_a_percentile():
    heat = np.zeros((10, 10), np.float32)
    heat[:5] = 0.2
    heat[5:] = 0.8
    assert 0.2 < threshold(heat) <= 0.8  # Otsu separates the two levels
    assert threshold(heat, percentile=10) == pytest.approx(0.2)
    assert threshold(np.full((4, 4), 0.5, np.float32)) == pytest.approx(0.5)  # one level: 90th percentile
    assert threshold(np.zeros((4, 4), np.float32)) is None


def test_empty_map_has_no_regions():
    assert find_regions(np.zeros((H, W), np.float32)) == []


def test_to_dict():
    region = Region([1, 2, 3, 4], 0.123456, "right upper zone")
    assert region.to_dict() == {
        "box": [1, 2, 3, 4],
        "location": "right upper zone",
        "in_lungs": None,  # located by the film's frame, not by lung fields
        "score": 0.1235,
    }


def _box_map(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A hand-made map: one flat block of evidence, a faint speck elsewhere so that Otsu has two levels."""
    heat = np.zeros((H, W), np.float32)
    heat[y0:y1, x0:x1] = 1.0
    heat[0 if y0 else H - 1, 0 if x0 else W - 1] = 0.1
    return heat


@pytest.mark.parametrize("view", ["PA", None])
def test_a_map_over_the_whole_film_is_diffuse_not_a_zone(view):
    [region] = find_regions(_box_map(0, 0, W, H), view_position=view)
    assert region.box == [0, 0, W, H]
    assert region.location == "diffuse (both lungs)"


def test_a_box_reaching_all_six_zones_is_diffuse_though_under_60_percent_of_the_film():
    # 58 % x 70 % of the film = 41 % of its area, but into both outer thirds and both outer zones.
    [region] = find_regions(_box_map(50, 45, 190, 255), view_position="PA")
    assert (region.box[2] - region.box[0]) * (region.box[3] - region.box[1]) < 0.6 * W * H
    assert region.location == "diffuse (both lungs)"


def test_a_box_of_60_percent_of_the_film_is_diffuse_even_on_one_side():
    # The right lung and the heart: [0, 0, 144, 300] is 60 % of a 240 x 300 film, never past 2/3 of the width.
    assert describe_location([0, 0, 144, 300], (0, 0, W, H), view_position="PA") == "diffuse (both lungs)"
    assert describe_location([0, 0, 142, 300], (0, 0, W, H), view_position="PA") == "right middle zone"


def test_a_wide_band_across_both_lungs_is_still_a_zone():
    # Both sides, but only the lower third: bilateral, not diffuse.
    assert find_regions(_box_map(10, 220, 230, 300), view_position="PA")[0].location == (
        "bilateral lower zones (basal)"
    )


def test_diffuse_on_a_lateral_film_names_no_side():
    assert describe_location([0, 0, W, H], (0, 0, W, H), view_position="LL") == "diffuse on the lateral view"
    assert (
        describe_location([80, 0, 120, H], (0, 0, W, H), view_position="LL")
        == "middle zone on the lateral view"
    )
