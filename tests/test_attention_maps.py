"""LeGrad and Chefer's rollout (`meddx.explain.attention`): maps computed by hand on a hand-built tower,
the timm tower's protocol (`meddx.model.vision`), and a transformers SigLIP tower (attention pooling, no
class token) through a small adapter that implements the same protocol."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from meddx.explain.attention import LeGradMethod, RolloutMethod, min_max
from meddx.explain.maps import AttributionInputs
from meddx.model.vision import TimmTower, VisionTower

# --- A hand-built one-layer tower whose attention and gradients are known in closed form -------------------
#
# Tokens x (1, 5, 3): a class token and a 2 x 2 grid of patches. One head, queries = keys = values = x:
# A = softmax(x x^T), y = x + A x. Class-token pooling reads y[0]; mean pooling the mean of y's patch rows.
# The score is s * d . y_pooled / |y_pooled| (the zero-shot logit), so dS/dy = s (d - (d.u) u) / |y| with
# u = y / |y|, and dS/dA[i, j] = dS/dy_i . x_j for each pooled row i.

CLASS = [1.0, 0.0, 0.0]
PATCHES = [[0.0, 0.2, 0.0], [0.0, -0.3, 0.1], [0.1, 0.0, 0.2], [0.5, 2.0, 0.0]]  # the last: the planted token
D, SCALE = [0.0, 1.0, 0.0], 3.0


class HandTower:
    """The `VisionTower` above; ``pooling`` "class_token" or "mean"."""

    prefix, grid, patch = 1, 2, 4

    def __init__(self, pooling: str) -> None:
        self.pooling = pooling
        self.blocks = [nn.Identity()]

    def embed(self, pixels):
        raise AssertionError("one layer: the scoring pass's tokens are reused, nothing is embedded")

    def block(self, index, tokens):
        return self.block_with_attention(index, tokens)[0]

    def block_with_attention(self, index, tokens):
        probabilities = (tokens @ tokens.transpose(1, 2)).softmax(dim=-1)[:, None]  # (N, 1 head, L, L)
        return tokens + probabilities[:, 0] @ tokens, probabilities  # the output reads the returned tensor

    def pool(self, tokens):
        return tokens[:, 0] if self.pooling == "class_token" else tokens[:, 1:].mean(dim=1)

    def pool_with_attention(self, tokens):
        return self.pool(tokens), None


def hand_inputs(tower, targets=(0,)) -> AttributionInputs:
    tokens = torch.tensor([[CLASS, *PATCHES]], dtype=torch.float64).float()
    tail = SimpleNamespace(difference=torch.tensor([D]), logit_scale=SCALE)
    return AttributionInputs(None, tokens, tail, None, torch.zeros(1, 3, 8, 8), list(targets), tower)


def by_hand(pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """(dS/dA, A), both (5, 5), in numpy from the closed form above."""
    x = np.array([CLASS, *PATCHES])
    scores = x @ x.T
    a = np.exp(scores - scores.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    y = x + a @ x
    rows = [0] if pooling == "class_token" else [1, 2, 3, 4]
    pooled = y[rows].mean(axis=0)
    u = pooled / np.linalg.norm(pooled)
    d_pooled = SCALE * (np.array(D) - (np.array(D) @ u) * u) / np.linalg.norm(pooled)
    grad = np.zeros((5, 5))
    for i in rows:
        grad[i] = (d_pooled / len(rows)) @ x.T  # dS/dy_i . x_j
    return grad, a


def scaled(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


@pytest.mark.parametrize("pooling", ["class_token", "mean"])
def test_legrad_matches_the_hand_computed_map(pooling):
    grad, _ = by_hand(pooling)
    expected = scaled(np.maximum(grad, 0).mean(axis=0)[1:]).reshape(2, 2)  # heads (1), query rows, patches
    maps = LeGradMethod()(hand_inputs(HandTower(pooling)))
    np.testing.assert_allclose(maps[0].numpy(), expected, atol=1e-5)
    assert maps[0].argmax() == 3  # the planted token


@pytest.mark.parametrize("pooling", ["class_token", "mean"])
def test_rollout_matches_the_hand_computed_map(pooling):
    grad, a = by_hand(pooling)
    rollout = np.eye(5) + np.maximum(grad * a, 0)  # one layer: R = I + mean_h((dS/dA * A)+) I
    readout = rollout[0] if pooling == "class_token" else rollout[1:].mean(axis=0)
    expected = scaled(readout[1:]).reshape(2, 2)
    maps = RolloutMethod()(hand_inputs(HandTower(pooling)))
    np.testing.assert_allclose(maps[0].numpy(), expected, atol=1e-5)
    assert maps[0].argmax() == 3


def test_targets_share_one_pass_and_a_flat_map_is_zeros():
    tower = HandTower("class_token")
    inputs = hand_inputs(tower, targets=(0, 1))
    inputs.tail.difference = torch.tensor([D, [-v for v in D]])  # a finding and its opposite
    for method in (LeGradMethod(), RolloutMethod()):
        both = method(inputs)
        assert both.shape == (2, 2, 2)
        torch.testing.assert_close(both[0], method(hand_inputs(tower))[0])
        assert both[1].argmax() != 3  # the opposite finding is not raised by the planted token
    assert torch.equal(min_max(torch.ones(1, 2, 2)), torch.zeros(1, 2, 2))


def test_the_methods_need_a_tower_and_enough_layers():
    inputs = hand_inputs(HandTower("mean"))
    with pytest.raises(ValueError, match="image tower"):
        LeGradMethod()(AttributionInputs(None, inputs.tokens, inputs.tail, None, inputs.baseline, [0]))
    with pytest.raises(ValueError, match="layers must be between 1 and 1"):
        RolloutMethod(layers=2)(inputs)


# --- The timm tower (BiomedCLIP's family) ------------------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "tiny-cls"])
def test_timm_tower_keeps_the_protocol(tmp_path, size):
    from meddx.dev.tiny import make_tiny_model
    from meddx.model.encoder import build_encoder
    from meddx.model.spec import ModelSpec, resolve

    encoder = build_encoder(resolve(ModelSpec("local-dir", str(make_tiny_model(tmp_path, size=size)))))
    tower = encoder.tower
    assert isinstance(tower, VisionTower) and isinstance(tower, TimmTower)
    assert (tower.prefix, tower.grid, tower.patch) == (1, 6, 16)  # 96-px input, although timm built 160
    assert tower.pooling == ("mean" if size == "tiny" else "class_token")
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = tower.embed(pixels)
        assert x.shape == (2, 1 + 36, 64)
        for index in range(len(tower.blocks)):
            y, probabilities = tower.block_with_attention(index, x)
            torch.testing.assert_close(y, tower.block(index, x), atol=1e-5, rtol=0)
            assert probabilities.shape == (2, 2, 37, 37)
            torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 2, 37))
            x = y
        torch.testing.assert_close(tower.pool(x), encoder.visual(pixels), atol=1e-5, rtol=0)
    assert tower.pool_with_attention(x)[1] is None


# --- A transformers SigLIP tower: attention pooling, no class token ---------------------------------------


class SiglipTower:
    """`VisionTower` over a transformers ``SiglipVisionModel``: what a SigLIP family's tower must do.

    ``block_with_attention`` redoes the eager attention with its softmax kept; ``pool_with_attention`` redoes
    the attention-pooling head (``nn.MultiheadAttention`` returns weights that the output does not depend
    on in the autograd graph, so the probe's attention is computed explicitly from its in-projection).
    """

    prefix, pooling = 0, "attention_pool"

    def __init__(self, model) -> None:
        vision = getattr(model, "vision_model", model)  # transformers 5: the model itself
        self.embeddings, self.post, self.head = vision.embeddings, vision.post_layernorm, vision.head
        self.blocks = list(vision.encoder.layers)
        self.patch = model.config.patch_size
        self.grid = model.config.image_size // self.patch

    def embed(self, pixels):
        return self.embeddings(pixels)

    def block(self, index, tokens):
        return self.blocks[index](tokens, attention_mask=None)

    def block_with_attention(self, index, tokens):
        layer = self.blocks[index]
        attn = layer.self_attn
        h = layer.layer_norm1(tokens)
        n, length, _ = h.shape

        def heads(linear):
            return linear(h).view(n, length, -1, attn.head_dim).transpose(1, 2)

        probabilities = (heads(attn.q_proj) @ heads(attn.k_proj).transpose(-1, -2) * attn.scale).softmax(-1)
        out = (probabilities @ heads(attn.v_proj)).transpose(1, 2).reshape(n, length, -1)
        x = tokens + attn.out_proj(out)
        return x + layer.mlp(layer.layer_norm2(x)), probabilities

    def pool_with_attention(self, tokens):
        h = self.post(tokens)
        mha, n, width = self.head.attention, len(tokens), tokens.shape[-1]
        w, b = mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
        probe = self.head.probe.expand(n, -1, -1)

        def heads(x, i):
            return nn.functional.linear(x, w[i], b[i]).view(n, -1, mha.num_heads, width // mha.num_heads)

        q, k, v = (heads(x, i).transpose(1, 2) for i, x in enumerate((probe, h, h)))
        probabilities = (q @ k.transpose(-1, -2) / math.sqrt(width // mha.num_heads)).softmax(
            -1
        )  # (N, H, 1, L)
        out = mha.out_proj((probabilities @ v).transpose(1, 2).reshape(n, 1, width))
        out = out + self.head.mlp(self.head.layernorm(out))
        return out[:, 0], probabilities

    def pool(self, tokens):
        return self.pool_with_attention(tokens)[0]


@pytest.fixture(scope="module")
def siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=32, patch_size=8, attn_implementation="sdpa",
    )  # fmt: skip
    return SiglipVisionModel(config).eval()


def test_a_siglip_tower_keeps_the_protocol(siglip):
    tower = SiglipTower(siglip)
    assert isinstance(tower, VisionTower)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = tower.embed(pixels)
        for index in range(len(tower.blocks)):
            y, probabilities = tower.block_with_attention(index, x)
            torch.testing.assert_close(y, tower.block(index, x), atol=1e-5, rtol=0)
            x = y
        pooled, probe = tower.pool_with_attention(x)
        torch.testing.assert_close(pooled, siglip(pixel_values=pixels).pooler_output, atol=1e-5, rtol=0)
    assert probabilities.shape == (2, 4, 16, 16) and probe.shape == (2, 4, 1, 16)


@pytest.mark.parametrize("method", [LeGradMethod, RolloutMethod])
@pytest.mark.parametrize("layers", [1, 3])
def test_the_maps_run_on_a_siglip_tower(siglip, method, layers):
    tower = SiglipTower(siglip)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = tower.block(1, tower.block(0, tower.embed(pixels)))  # entering the last layer
    difference = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    tail = SimpleNamespace(difference=difference, logit_scale=10.0)
    inputs = AttributionInputs(pixels, tokens, tail, None, torch.zeros_like(pixels), [0, 2], tower)
    maps = method(layers=layers)(inputs)
    assert maps.shape == (2, 4, 4) and maps.min() == 0 and maps.max() == 1
    alone = method(layers=layers)(AttributionInputs(pixels, tokens, tail, None, pixels, [2], tower))
    torch.testing.assert_close(maps[1], alone[0], atol=1e-5, rtol=0)
    assert not torch.allclose(maps[0], maps[1])  # each finding its own map
    assert all(p.grad is None for p in siglip.parameters())


def test_the_maps_leave_the_scores_and_the_tower_untouched(tmp_path):
    from PIL import Image

    from meddx.dev.tiny import make_tiny_model, synthetic_film
    from meddx.explain.maps import film_maps
    from meddx.model.encoder import build_encoder
    from meddx.model.scored import score_image
    from meddx.model.spec import ModelSpec, resolve
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.zero_shot import text_directions

    encoder = build_encoder(resolve(ModelSpec("local-dir", str(make_tiny_model(tmp_path, size="tiny-cls")))))
    directions = text_directions(encoder, load_vocabulary().findings[:3])
    film = Image.fromarray(synthetic_film(np.random.default_rng(5), size=120, blob=True).pixels).convert(
        "RGB"
    )
    scored = score_image(encoder, film, directions)
    tokens, scores = scored.tokens.clone(), scored.zero_shot.clone()
    weights = {n: p.detach().clone() for n, p in encoder.model.visual.named_parameters()}
    for method in ("legrad", "rollout"):
        maps = film_maps(encoder, scored, [0, 1, 2], method=method)
        assert len(maps) == 3 and all(m.on_film().shape == (120, 120) for m in maps)
    assert torch.equal(scored.tokens, tokens) and torch.equal(scored.zero_shot, scores)
    torch.testing.assert_close(score_image(encoder, film, directions).zero_shot, scores, atol=0, rtol=0)
    for name, parameter in encoder.model.visual.named_parameters():
        assert torch.equal(parameter, weights[name]) and parameter.grad is None, name
    for module in encoder.model.visual.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def test_every_method_has_a_card_and_the_default_follows_the_test():
    """The cards (page menu, report, docs) cover exactly the offered methods, in menu order; the default is
    the fastest card that passed within half a forward per map, else Grad-CAM labelled as failing."""
    from meddx.explain.maps import METHODS
    from meddx.explain.methods import DEFAULT_METHOD, FAST_METHODS, METHOD_CARDS

    assert list(METHOD_CARDS) == list(METHODS)
    cheap = [c for c in METHOD_CARDS.values() if c.forwards_per_map is not None and c.forwards_per_map <= 0.5]
    passing = sorted((c for c in cheap if c.passed), key=lambda c: c.forwards_per_map)
    assert (passing[0].key if passing else "gradcam") == DEFAULT_METHOD
    assert {c.key for c in cheap} == set(FAST_METHODS)
    gradcam = METHOD_CARDS["gradcam"]
    assert not gradcam.passed and "failed" in gradcam.menu_note and "did not pass" in gradcam.verdict
