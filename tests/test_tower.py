"""The split image tower: stem + tail give the whole tower's scores, and the class-token shortcut is exact."""

from __future__ import annotations

import pytest
import torch

from meddx.explain.maps import METHODS, AttributionInputs, ImageScorer
from meddx.model.encoder import load_encoder
from meddx.model.tower import TowerTail, stem


@pytest.fixture(scope="module")
def cls_encoder(tmp_path_factory):
    from meddx.dev.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("tiny-cls"), size="tiny-cls", seed=1)
    return load_encoder(f"local-dir:{folder}")


def _directions(encoder, count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(count, encoder.visual.head.proj.out_features, generator=generator), dim=-1
    )


def _pixels(encoder, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, encoder.image_size, encoder.image_size, generator=generator)


def test_class_token_tail_matches_the_whole_tower(cls_encoder):
    difference = _directions(cls_encoder)
    tail = TowerTail(cls_encoder, difference, 7.0)
    assert tail.class_token_only
    pixels = _pixels(cls_encoder)
    with torch.inference_mode():
        tokens = stem(cls_encoder, pixels)
        shortcut = tail(tokens)
        tail.class_token_only = False
        full_block = tail(tokens)
        whole = ImageScorer(cls_encoder.visual, difference, 7.0)(pixels)
    torch.testing.assert_close(shortcut, full_block, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shortcut, whole, rtol=1e-5, atol=1e-6)


def test_class_token_tail_gives_the_same_gradcam(cls_encoder):
    tail = TowerTail(cls_encoder, _directions(cls_encoder, seed=1), 7.0)
    with torch.inference_mode():
        tokens = stem(cls_encoder, _pixels(cls_encoder, seed=1)[:1]).clone()

    def cam(class_token_only: bool) -> torch.Tensor:
        tail.class_token_only = class_token_only
        inputs = AttributionInputs(None, tokens.clone(), tail, None, torch.zeros(1), [0, 1, 2])
        with torch.enable_grad():
            return METHODS["gradcam"]()(inputs).detach()

    shortcut, full_block = cam(True), cam(False)
    assert shortcut.abs().max() > 0
    torch.testing.assert_close(shortcut, full_block, rtol=1e-4, atol=1e-7)


def test_average_pooled_tower_runs_the_whole_last_block(tiny_model_dir):
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    assert not TowerTail(encoder, _directions(encoder), 7.0).class_token_only
