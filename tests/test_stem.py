"""The inference-runtime stem: exported through the production warm-up, same scores and Grad-CAM maps as the
PyTorch stem, reused from the cache, the int8 agreement gate both ways, and the PyTorch fallback."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from meddx.config import Settings
from meddx.explain.maps import film_maps
from meddx.model import stem as stem_module
from meddx.model.encoder import load_encoder
from meddx.model.scored import score_image
from meddx.model.stem import (
    RuntimeStem,
    agreement,
    attach_runtime_stem,
    load_runtime_stem,
    stem_path,
)
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import text_directions
from meddx.pipeline import analyze, warm_up
from tests.helpers import write_png


@pytest.fixture(scope="module", params=["tiny-cls", "tiny"])
def model_dir(request, tmp_path_factory):
    """Own tiny models (the class-token tower BiomedCLIP has, and the average-pooled one), so that the stem
    attached here never reaches another test module's cached encoder."""
    from meddx.dev.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp(f"stem-{request.param}"), size=request.param, seed=3)


@pytest.fixture()
def settings(model_dir, tmp_path):
    encoder = load_encoder(f"local-dir:{model_dir}")
    encoder.runtime_stem = None
    yield Settings(model=f"local-dir:{model_dir}", threads=1, cache_dir=tmp_path / "cache")
    encoder.runtime_stem = None


def _directions(encoder, settings):
    return text_directions(encoder, list(load_vocabulary().findings), cache_dir=settings.cache_dir)


def test_warm_up_exports_the_stem_and_scores_and_maps_match_pytorch(settings, tmp_path):
    encoder = warm_up(settings)  # the production path: export into the cache, load, check
    runtime = encoder.runtime_stem
    assert isinstance(runtime, RuntimeStem) and runtime.kind == "fp32"
    assert runtime.path == stem_path(encoder, settings.cache_dir, "fp32") and runtime.path.is_file()

    film = write_png(tmp_path / "film.png")
    from meddx.io import load_study

    image = load_study(film).to_pil("RGB")
    directions = _directions(encoder, settings)
    fast = score_image(encoder, image, directions)
    encoder.runtime_stem = None
    slow = score_image(encoder, image, directions)
    encoder.runtime_stem = runtime
    assert not torch.equal(fast.tokens, slow.tokens)  # really two different stems
    torch.testing.assert_close(fast.tokens, slow.tokens, rtol=0, atol=1e-4)
    torch.testing.assert_close(fast.zero_shot, slow.zero_shot, rtol=0, atol=1e-4)
    with torch.inference_mode():
        logits_fast, logits_slow = fast.tail(fast.tokens), slow.tail(slow.tokens)
    torch.testing.assert_close(logits_fast, logits_slow, rtol=0, atol=1e-4)

    targets = [0, 1, 2]
    maps_fast = [m.square for m in film_maps(encoder, fast, targets)]
    maps_slow = [m.square for m in film_maps(encoder, slow, targets)]
    assert any(m.any() for m in maps_slow)
    for a, b in zip(maps_fast, maps_slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)

    # The whole chain serves from the runtime stem with the same probabilities as with PyTorch's.
    with_runtime = analyze(film, "cough", settings=settings)
    encoder.runtime_stem = None
    with_torch = analyze(film, "cough", settings=settings)
    for a, b in zip(with_runtime.findings, with_torch.findings, strict=True):
        assert a.id == b.id and abs(a.probability - b.probability) <= 1e-4


def test_the_export_is_made_once_per_model_and_reused(settings):
    encoder = load_encoder(settings.model)
    first = load_runtime_stem(encoder, "fp32", settings.cache_dir)
    written = first.path.stat().st_mtime_ns
    second = load_runtime_stem(encoder, "fp32", settings.cache_dir)
    assert second.path == first.path and second.path.stat().st_mtime_ns == written
    assert [p.name for p in (settings.cache_dir / "stem").iterdir()] == [first.path.name]


def test_int8_passes_the_gate_here_and_serves(settings):
    encoder = load_encoder(settings.model)
    settings = replace(settings, stem="int8")
    warm_up(settings)
    assert encoder.runtime_stem.kind == "int8"
    assert agreement(encoder, encoder.runtime_stem, _directions(encoder, settings)) is None


def test_int8_refused_by_the_gate_falls_back_to_fp32_with_one_line(settings, monkeypatch, caplog):
    encoder = load_encoder(settings.model)
    directions = _directions(encoder, settings)
    int8 = load_runtime_stem(encoder, "int8", settings.cache_dir, directions=directions)
    why = agreement(encoder, int8, directions, max_delta=1e-7)  # int8 is never *that* close
    assert why is not None and why.startswith("|Δp|") and "gate film" in why and "\n" not in why

    monkeypatch.setattr(stem_module, "GATE_MAX_DELTA", 1e-7)
    caplog.set_level(logging.INFO, logger="meddx.model.stem")
    attach_runtime_stem(encoder, "int8", settings.cache_dir, directions=directions)
    assert encoder.runtime_stem.kind == "fp32"
    refusals = [r.getMessage() for r in caplog.records if "int8 refused" in r.getMessage()]
    assert len(refusals) == 1 and "|Δp|" in refusals[0]


def test_gate_refuses_a_stem_that_changes_the_ranking(settings):
    encoder = load_encoder(settings.model)
    directions = _directions(encoder, settings)
    fp32 = load_runtime_stem(encoder, "fp32", settings.cache_dir)
    assert agreement(encoder, fp32, directions) is None

    def shuffled(pixels):  # a stem that gives each film another film's tokens
        return fp32(pixels).roll(1, dims=0)

    why = agreement(encoder, shuffled, directions, max_delta=1.0)
    assert why is not None and why.startswith("top 3 differs on gate film")


def test_export_failure_leaves_the_pytorch_stem_with_one_line(settings, monkeypatch, caplog, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this\narchitecture")

    monkeypatch.setattr(torch.onnx, "export", broken)
    caplog.set_level(logging.INFO, logger="meddx.model.stem")
    encoder = warm_up(settings)
    assert encoder.runtime_stem is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "\n" not in line and "PyTorch" in line and "cannot trace this architecture" in line
    assert analyze(write_png(tmp_path / "film.png"), settings=settings).findings


def test_a_background_export_attaches_when_done(settings):
    encoder = load_encoder(settings.model)
    thread = attach_runtime_stem(encoder, "fp32", settings.cache_dir, background=True)
    assert thread is not None
    thread.join(timeout=120)
    assert encoder.runtime_stem is not None and encoder.runtime_stem.kind == "fp32"
    encoder.runtime_stem = None  # now in the cache: loaded before returning
    assert attach_runtime_stem(encoder, "fp32", settings.cache_dir, background=True) is None
    assert encoder.runtime_stem.kind == "fp32"


def test_torch_stem_setting_runs_no_runtime(settings, monkeypatch):
    monkeypatch.setenv("MEDDX_STEM", "torch")
    chosen = Settings.from_env()
    assert chosen.stem == "torch"
    encoder = warm_up(replace(settings, stem=chosen.stem))
    assert encoder.runtime_stem is None and not (settings.cache_dir / "stem").exists()
    monkeypatch.setenv("MEDDX_STEM", "fp16")
    with pytest.raises(ValueError, match="MEDDX_STEM must be one of fp32, int8, torch"):
        Settings.from_env()


def test_the_pytorch_stem_weights_are_released_and_read_back_for_whole_tower_methods(settings, tmp_path):
    from meddx.io import load_study
    from meddx.model.stem import torch_stem_resident

    encoder = load_encoder(settings.model)
    image = load_study(write_png(tmp_path / "film.png")).to_pil("RGB")
    directions = _directions(encoder, settings)
    trunk = encoder.visual.trunk
    before = {n: p.detach().clone() for n, p in trunk.named_parameters()}
    scored = score_image(encoder, image, directions)
    reference = film_maps(encoder, scored, [0], method="integrated_gradients", n_steps=4)[0].square

    warm_up(settings)  # attaches the runtime stem and drops PyTorch's copy of the stem weights
    assert not torch_stem_resident(encoder)
    assert trunk.blocks[0].attn.qkv.weight.is_meta and trunk.patch_embed.proj.weight.is_meta
    assert not trunk.blocks[-1].attn.qkv.weight.is_meta and not trunk.norm.weight.is_meta
    scored = score_image(encoder, image, directions)  # the runtime stem: no read-back
    assert not torch_stem_resident(encoder)

    again = film_maps(encoder, scored, [0], method="integrated_gradients", n_steps=4)[0].square
    assert torch_stem_resident(encoder)
    for name, param in trunk.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    np.testing.assert_allclose(again, reference, rtol=0, atol=1e-5)


def test_warm_up_releases_the_text_tower_and_a_custom_label_reads_it_back(settings):
    from meddx.model.stem import text_tower_resident

    encoder = load_encoder(settings.model)
    custom = load_vocabulary().select(["left lower lobe collapse"], max_labels=4)
    assert custom[0].custom
    expected = text_directions(encoder, custom)
    encoder.direction_cache.get("_custom", {}).clear()

    warm_up(settings)
    assert not text_tower_resident(encoder)
    assert all(p.is_meta for p in encoder.model.text.parameters())
    again = text_directions(encoder, custom)  # not cached: the text tower runs, read back first
    assert text_tower_resident(encoder)
    torch.testing.assert_close(again.positive, expected.positive, rtol=0, atol=1e-6)
    torch.testing.assert_close(again.negative, expected.negative, rtol=0, atol=1e-6)


def test_released_weights_come_back_only_from_the_file_they_were_read_from(settings, tmp_path):
    import os

    from meddx.errors import ModelError
    from meddx.io import load_study
    from meddx.model.spec import WEIGHT_NAMES

    encoder = load_encoder(settings.model)
    image = load_study(write_png(tmp_path / "film.png")).to_pil("RGB")
    directions = _directions(encoder, settings)
    warm_up(settings)
    folder = encoder.resolved.folder
    checkpoint = next(folder / n for n in WEIGHT_NAMES if (folder / n).is_file())
    stat = checkpoint.stat()
    scored = score_image(encoder, image, directions)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as if replaced by a download
    try:
        with pytest.raises(ModelError, match="changed or disappeared since meddx loaded it"):
            film_maps(encoder, scored, [0], method="integrated_gradients", n_steps=2)
    finally:
        os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert film_maps(encoder, scored, [0], method="integrated_gradients", n_steps=2)[0].square.size
