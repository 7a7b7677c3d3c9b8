"""The shipped lung-field model: its weights file and card (checksum, data, licence, numbers), the network's
output on a film, the refusal of a file that does not match its card, and the chest-film warning on
generated non-chest images through every surface (pipeline JSON, report, page). Its accuracy on real films
cannot be tested here (the films are not in the project): docs/anatomy.md has the held-out numbers, and
``python -m meddx.dev.anatomy_check`` runs it on real films."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from meddx.anatomy import network
from meddx.anatomy.fields import segment
from meddx.anatomy.plausibility import WARNING
from meddx.anatomy.reading import read_anatomy
from meddx.dev.non_chest import KINDS, non_chest_image
from meddx.errors import ModelError

CARD_MD = network.WEIGHTS_DIR / "lung_unet_card.md"
NOT_CHEST = WARNING.split(":")[0]


def test_the_weights_match_their_card():
    card = network.read_card()
    assert network.sha256(network.WEIGHTS_FILE) == card.sha256
    assert network.WEIGHTS_FILE.stat().st_size < 5_000_000  # a few MB at most, shipped in the package
    assert card.size == network.SIZE and card.classes == network.CLASSES
    raw = json.loads(network.CARD_FILE.read_text())
    assert raw["seed"] == 0 and raw["command"].startswith("python -m meddx train-anatomy ")
    held_out = raw["split"]["held_out"]
    totals = {s: sum(raw["split"][role][s] for role in raw["split"]) for s in held_out}
    for source in ("Montgomery", "Shenzhen"):  # split by patient, at least 20 % of each source held out
        assert held_out[source] >= 0.2 * totals.get(source, 0) and held_out[source] > 0
        assert 0.0 < raw["metrics"][source]["dice"] <= 1.0
    assert "CC BY-NC-SA 4.0" in card.licence or "Apache-2.0" in card.licence
    text = CARD_MD.read_text()  # the human-readable card names the same file and licence
    assert card.sha256 in text and card.licence.split(" ")[0] in text


def test_a_file_that_does_not_match_its_card_is_refused(tmp_path):
    weights, card = tmp_path / "w.safetensors", tmp_path / "w.json"
    shutil.copy(network.WEIGHTS_FILE, weights)
    data = json.loads(network.CARD_FILE.read_text())
    data["sha256"] = "0" * 64
    card.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not match their card's checksum"):
        network.load_network(weights, card)
    with pytest.raises(ModelError, match="missing"):
        network.load_network(tmp_path / "none.safetensors", card)


def test_the_network_returns_right_and_left_lung_probabilities_on_its_square():
    torch.set_num_threads(1)
    film = np.random.default_rng(0).integers(0, 255, (300, 260), dtype=np.uint8)
    x = network.prepare(film)
    assert x.shape == (1, 1, network.SIZE, network.SIZE) and x.dtype == torch.float32
    fields = segment(x)
    for probs in (fields.right, fields.left):
        assert probs.shape == (network.SIZE, network.SIZE) and probs.dtype == np.float32
        assert probs.min() >= 0.0 and probs.max() <= 1.0
    assert (fields.right + fields.left <= 1.0 + 1e-5).all()
    assert fields.masks(300, 260).shape == (300, 260)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_non_chest_images_get_the_warning(kind):
    torch.set_num_threads(1)
    image = non_chest_image(kind, seed=0)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    anatomy = read_anatomy(grey)
    assert not anatomy.chest_film and anatomy.warnings()[0].startswith(NOT_CHEST)
    assert anatomy.to_dict()["chest_film"] is False and anatomy.ctr_text() is None


def test_a_lateral_film_is_not_segmented():
    anatomy = read_anatomy(np.zeros((64, 64), np.uint8), "LL")
    assert anatomy.fields is None and anatomy.chest_film and anatomy.warnings() == []
