"""The CLI's overlay figures (issue 14): a perceptual colour map, the finding's name and image-only score,
the region boxes drawn where the regions are, and a caption in a sidecar JSON."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from meddx.explain.figure import BOX_COLOUR, FigureText, band_height, caption, colour_key, figure
from meddx.explain.overlay import png_bytes
from meddx.explain.regions import Region, find_regions

ROOT = Path(__file__).resolve().parents[1]
H, W = 300, 240
TEXT = FigureText("Pleural effusion", 0.625, "gradcam")


def hand_made() -> tuple[np.ndarray, np.ndarray, list[Region]]:
    """A mid-gray film, two blocks of evidence, and their regions as `find_regions` sees them."""
    film = np.full((H, W), 90, np.uint8)
    heat = np.zeros((H, W), np.float32)
    heat[40:100, 20:80] = 1.0
    heat[200:260, 150:220] = 0.6
    regions = find_regions(heat, view_position="PA", percentile=10)  # both blocks
    assert [r.box for r in regions] == [[20, 40, 80, 100], [150, 200, 220, 260]]
    return film, heat, regions


def cyan(image: np.ndarray) -> np.ndarray:
    return np.all(image == BOX_COLOUR, axis=-1)


def decoded(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png_bytes(image))).convert("RGB"))


def assert_boxes_drawn(image: np.ndarray, boxes: list[list[int]], band: int) -> None:
    """Every box's outline is cyan on all four sides; nothing outside the boxes is cyan."""
    is_cyan = cyan(image)
    inside_any = np.zeros(is_cyan.shape, bool)
    for x0, y0, x1, y1 in boxes:
        top, bottom = y0 + band, y1 - 1 + band
        assert is_cyan[top, x0:x1].mean() > 0.9 and is_cyan[bottom, x0:x1].mean() > 0.9
        assert is_cyan[top : bottom + 1, x0].mean() > 0.9 and is_cyan[top : bottom + 1, x1 - 1].mean() > 0.9
        middle = is_cyan[top + (y1 - y0) // 2 - 2 : top + (y1 - y0) // 2 + 3, x0 + (x1 - x0) // 2]
        assert not middle.any()  # an outline, not a filled box
        inside_any[top : bottom + 1, x0:x1] = True
    assert not is_cyan[band:][~inside_any[band:]].any()


def test_the_figure_has_a_title_band_and_boxes_where_the_regions_are():
    film, heat, regions = hand_made()
    image = decoded(figure(film, heat, TEXT, regions))
    band = band_height(W)
    assert image.shape == (H + band, W, 3)
    assert_boxes_drawn(image, [r.box for r in regions], band)
    title = image[:band]
    assert (title.max(axis=-1) > 200).sum() > 200  # the name and score are written in the band


def test_the_map_is_blended_in_inferno_and_the_film_is_untouched_where_the_map_is_zero():
    film, heat, _ = hand_made()
    image = figure(film, heat, TEXT, [])
    band = band_height(W)
    inferno_top = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_INFERNO)[0, 0, ::-1]
    expected = np.round(90 * 0.55 + inferno_top.astype(np.float32) * 0.45)
    assert np.allclose(image[band + 70, 50], expected, atol=1)
    assert (image[band + 150, 120] == 90).all()  # no evidence: the film shows as it is
    assert not cyan(image[band:]).any()  # no regions, no boxes


def test_the_colour_key_runs_dark_to_bright():
    key = colour_key(100, 4)
    lightness = key[0].astype(float) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lightness) >= -1) and lightness[-1] - lightness[0] > 200


def test_the_caption_says_what_the_figure_shows():
    _, _, regions = hand_made()
    text = caption(TEXT, regions)
    assert "Attribution map (gradcam) of Pleural effusion, image-only score 0.62" in text  # 0.625 rounds even
    assert f"box 1: {regions[0].location} (peak 1.00); box 2: {regions[1].location} (peak 0.60)" in text
    assert "not where disease is" in text and "not a diagnosis" in text
    assert "no region stood out" in caption(TEXT, [])


@pytest.mark.slow
def test_the_cli_writes_figures_with_boxes_and_captions(tmp_path, tiny_model_dir):
    film = np.full((320, 256), 70, np.uint8)
    film[100:220, 60:200] = 190
    Image.fromarray(film).save(tmp_path / "film.png")
    out = tmp_path / "overlays"
    env = dict(os.environ, MEDDX_MODEL=f"local-dir:{tiny_model_dir}", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "meddx", "analyze", str(tmp_path / "film.png"), "--json", "--top-k", "2",
         "--overlays", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    by_id = {f["id"]: f for f in data["findings"]}
    assert len(data["overlay_files"]) == 2
    for path in map(Path, data["overlay_files"]):
        sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        finding = by_id[sidecar["finding"]]
        assert sidecar["image"] == path.name and sidecar["colormap"] == "inferno"
        assert sidecar["image_probability"] == finding["image_probability"]
        keys = ("box", "location", "in_lungs", "score")
        assert [{k: r[k] for k in keys} for r in sidecar["regions"]] == finding["regions"]
        assert finding["label"] in sidecar["alt"] and f"{finding['image_probability']:.2f}" in sidecar["alt"]
        image = np.asarray(Image.open(path).convert("RGB"))
        band = sidecar["film_offset_y"]
        assert image.shape == (320 + band, 256, 3)
        assert finding["regions"], "the tiny model's map has at least one region"
        drawn = cyan(image)
        for region in finding["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert drawn[y0 + band, x0:x1].mean() > 0.9 and drawn[y0 + band : y1 + band, x0].mean() > 0.9
