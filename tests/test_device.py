"""`meddx.device`: MEDDX_DEVICE / --device, the auto choice, the refusal of a missing GPU, the mixed-precision
gate; where every tensor of the chain lives (checked on PyTorch's meta device: a tensor made on the CPU
inside the chain meets the model's meta tensors and raises); the batch actors' device; and, marked ``gpu``
and run only where CUDA exists, the chain on a real GPU against the CPU (tests/test_device_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from meddx.config import Settings
from meddx.device import autocast_dtype, parse_device, resolve_device
from meddx.errors import InputError, ModelError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "auto"), ("", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1")],
)
def test_device_strings_are_checked(raw, expected):
    assert parse_device(raw) == expected


@pytest.mark.parametrize("raw", ["gpu", "cuda:", "cuda:x", "mps", "cpu,cuda"])
def test_unknown_device_strings_are_refused(raw):
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        parse_device(raw)


def test_settings_read_meddx_device(monkeypatch):
    monkeypatch.setenv("MEDDX_DEVICE", "cpu")
    assert Settings.from_env().device == "cpu"
    monkeypatch.delenv("MEDDX_DEVICE")
    assert Settings.from_env().device == "auto"
    monkeypatch.setenv("MEDDX_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MEDDX_DEVICE"):
        Settings.from_env()


def test_auto_picks_cuda_only_when_pytorch_sees_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_named_gpu_that_is_not_there_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(ModelError) as caught:
            resolve_device(asked)
        message = str(caught.value)
        assert "\n" not in message and repr(asked) in message and "no CUDA device" in message
        assert "--device cpu" in message


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ModelError, match=r"2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def _films(n: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 8, 8, generator=generator) for _ in range(n)]


def test_mixed_precision_is_kept_only_when_scores_agree_with_fp32():
    exact = torch.nn.Linear(3 * 8 * 8, 4)
    torch.nn.init.zeros_(exact.weight)
    torch.nn.init.zeros_(exact.bias)  # every score 0.5, exact in bf16: the same scores

    def agreeing(pixels):
        return torch.sigmoid(exact(pixels.flatten(1)))

    assert autocast_dtype(agreeing, _films(), torch.device("cpu"), dtypes=[torch.bfloat16]) is torch.bfloat16

    sharp = torch.nn.Linear(3 * 8 * 8, 4)
    torch.nn.init.normal_(sharp.weight, std=3.0, generator=torch.Generator().manual_seed(1))

    def disagreeing(pixels):  # bf16's 8-bit mantissa moves steep sigmoids by far more than 1e-3
        return torch.sigmoid(sharp(pixels.flatten(1)))

    assert autocast_dtype(disagreeing, _films(), torch.device("cpu"), dtypes=[torch.bfloat16]) is None
    assert autocast_dtype(agreeing, [], torch.device("cpu"), dtypes=[torch.bfloat16]) is None


def test_the_cli_refuses_cuda_on_a_machine_without_one(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from meddx.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    film = tmp_path / "film.png"
    Image.new("L", (96, 96), 90).save(film)
    status = main(["analyze", str(film), "--model", f"local-dir:{tiny_model_dir}", "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 3 and "no CUDA device" in err and err.count("\n") == 1


FAMILIES = ("open_clip_hf", "open_clip", "siglip", "clip")
META = torch.device("meta")


def _on_meta(folder):
    """A family's model built as `load_encoder` builds it, moved the way it moves a model to a GPU, but to
    the meta device; with text directions computed on the CPU first (they are host tensors)."""
    from meddx.model.encoder import build_encoder, move_resident
    from meddx.model.spec import resolve
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.zero_shot import text_directions

    encoder = build_encoder(resolve(f"local-dir:{folder}"))
    directions = text_directions(encoder, load_vocabulary().findings[:4])
    move_resident(encoder.model, META)
    encoder.device = META
    return encoder, directions


@pytest.mark.parametrize("family", FAMILIES)
def test_the_scoring_pass_and_every_map_run_on_the_models_device(family_model_dirs, family):
    from PIL import Image

    from meddx.explain.maps import METHODS, attribute
    from meddx.model.scored import ScoredImage, scoring_pass
    from meddx.model.tower import TowerTail

    encoder, directions = _on_meta(family_model_dirs[family])
    assert all(p.device == META for p in encoder.model.parameters())
    pixels, geometry = encoder.preprocess(Image.new("RGB", (90, 70), 100))
    pixels = pixels[None].to(encoder.device)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)
    tokens, embedding, probabilities = scoring_pass(encoder, pixels, tail)
    assert {tokens.device, embedding.device, probabilities.device} == {META}
    assert probabilities.shape == (1, 4) and tokens.dtype == torch.float32
    scored = ScoredImage(pixels[0], geometry, tokens, tail, probabilities[0], embedding)
    options = {"integrated_gradients": {"n_steps": 3}, "gradient_shap": {"n_samples": 2}}
    for method in METHODS:  # Captum and the attention methods on the device, for two targets at once
        maps = attribute(encoder, scored, [0, 2], method=method, **options.get(method, {}))
        assert maps.device == META and maps.shape[0] == 2, method


def test_a_cpu_tensor_inside_the_chain_would_be_caught(family_model_dirs, monkeypatch):
    """The check above can fail: a baseline made on the CPU (as before this release) raises on meta."""
    from meddx.explain import maps as maps_module
    from meddx.model.scored import ScoredImage, scoring_pass
    from meddx.model.tower import TowerTail

    encoder, directions = _on_meta(family_model_dirs["open_clip_hf"])
    pixels = torch.zeros(1, 3, encoder.image_size, encoder.image_size, device=META)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale, directions.bias)
    tokens, embedding, probabilities = scoring_pass(encoder, pixels, tail)
    scored = ScoredImage(pixels[0], None, tokens, tail, probabilities[0], embedding)
    side = encoder.image_size
    monkeypatch.setattr(maps_module, "black_baseline", lambda e: torch.zeros(1, 3, side, side))
    with pytest.raises(RuntimeError, match="device"):
        maps_module.attribute(encoder, scored, [0], method="integrated_gradients", n_steps=2)


def test_weights_read_back_go_to_the_device_of_the_rest_of_the_model(family_model_dirs):
    from meddx.model.weights import resident, restore

    encoder, _ = _on_meta(family_model_dirs["siglip"])
    from meddx.model.stem import release_text_tower

    release_text_tower(encoder)
    assert not resident(encoder.text_owner)
    restore(encoder.text_owner)  # read from the checkpoint onto the model's device, not the CPU
    assert resident(encoder.text_owner)
    assert {p.device for p in encoder.text_owner.parameters()} == {META}


def test_the_onnx_stem_is_a_cpu_optimisation_only(family_model_dirs, tmp_path, caplog):
    import logging

    from meddx.model.stem import attach_runtime_stem

    encoder, directions = _on_meta(family_model_dirs["open_clip_hf"])
    with caplog.at_level(logging.INFO, logger="meddx.model.stem"):
        assert attach_runtime_stem(encoder, "int8", tmp_path / "cache", directions=directions) is None
    assert encoder.runtime_stem is None and not (tmp_path / "cache").exists()  # nothing exported
    assert "PyTorch on meta" in caplog.text


def test_models_are_cached_per_device_and_auto_is_the_cpu_without_a_gpu(tiny_model_dir, monkeypatch):
    from meddx.model.card import model_card
    from meddx.model.encoder import clear_cache, load_encoder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clear_cache()
    spec = f"local-dir:{tiny_model_dir}"
    encoder = load_encoder(spec, device="auto")
    assert encoder is load_encoder(spec, device="cpu") and encoder.device == torch.device("cpu")
    card = model_card(encoder, calibrated=False)
    assert (card.device, card.precision) == ("CPU", "fp32") and "runs on CPU" in card.line()
    with pytest.raises(ModelError, match="no CUDA device"):
        load_encoder(spec, device="cuda:0")
    clear_cache()


def test_mixed_precision_is_never_gated_on_the_cpu(tiny_model_dir):
    from meddx.model.encoder import clear_cache, load_encoder
    from meddx.model.precision import gate_autocast
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.zero_shot import text_directions

    encoder = load_encoder(f"local-dir:{tiny_model_dir}", device="cpu")
    assert gate_autocast(encoder, text_directions(encoder, load_vocabulary().findings[:3])) is None
    assert encoder.autocast is None
    clear_cache()


def test_integrated_gradients_batches_by_device_memory():
    from meddx.explain.gpu_batch import CPU_BATCH, fitting_batch, internal_batch

    assert fitting_batch(free_bytes=8 << 30, per_item_bytes=1 << 30, most=50) == 4  # half of 8 GB, 1 GB each
    assert fitting_batch(free_bytes=80 << 30, per_item_bytes=50 << 20, most=50) == 50  # all steps fit
    assert fitting_batch(free_bytes=1 << 30, per_item_bytes=4 << 30, most=50) == 1  # never below one
    cpu_pixels = torch.zeros(7, 3, 4, 4)
    assert internal_batch(torch.nn.Identity(), cpu_pixels, most=50) == CPU_BATCH
    assert internal_batch(torch.nn.Identity(), cpu_pixels, most=4) == 4


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [("auto", 0, "cpu"), ("cpu", 0, "cpu"), ("auto", 1, "cuda"), ("cuda", 0.5, "cuda"), ("cuda", 1, "cuda")],
)
def test_batch_actors_run_where_their_gpus_are(device, gpus, expected):
    from meddx.batch.engine import actor_device

    assert actor_device(device, gpus) == expected


@pytest.mark.parametrize(
    ("device", "gpus", "words"),
    [
        ("cpu", 1, "drop one"),
        ("cuda:1", 1, "cuda:0 inside the actor"),
        ("cuda", 0, "needs --gpus-per-worker"),
    ],
)
def test_batch_refuses_a_device_that_contradicts_the_gpus_reserved(device, gpus, words):
    from meddx.batch.engine import actor_device

    with pytest.raises(InputError, match=words):
        actor_device(device, gpus)


def test_the_batch_command_refuses_cuda_without_gpus_before_ray_starts(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    from meddx.cli import main

    (tmp_path / "films").mkdir()
    Image.new("L", (64, 64), 90).save(tmp_path / "films" / "a.png")
    model = f"local-dir:{tiny_model_dir}"
    status = main(
        [
            "batch",
            str(tmp_path / "films"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            model,
            "--device",
            "cuda",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "needs --gpus-per-worker" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_map_that_runs_out_of_gpu_memory_leaves_the_scores_and_says_so(tiny_settings, monkeypatch):
    import io

    from PIL import Image

    from meddx import pipeline

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipeline, "film_maps", out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    buffer = io.BytesIO()
    Image.new("L", (96, 96), 90).save(buffer, format="PNG")
    analysis = pipeline.analyze(buffer.getvalue(), settings=tiny_settings, top_k=2)
    assert analysis.findings and not analysis.maps
    (warning,) = [w for w in analysis.warnings if "out of memory" in w]
    assert "Grad-CAM map; not drawn:" in warning and "MEDDX_DEVICE=cpu" in warning


@pytest.mark.slow
def test_a_batch_actor_given_a_gpu_it_cannot_see_refuses_instead_of_using_the_cpu(
    tiny_model_dir, tmp_path, capsys
):
    """A Ray node that declares a GPU PyTorch cannot see (a driver too old, a wrong CUDA_VISIBLE_DEVICES):
    the actor asked to run on it stops with the device message; nothing is scored on the CPU instead."""
    ray = pytest.importorskip("ray")
    import logging

    from PIL import Image

    from meddx.cli import main

    if torch.cuda.device_count():  # not `is_available`, which every non-gpu test sees as False
        pytest.skip("this machine has a GPU the actor would see")
    (tmp_path / "films").mkdir()
    Image.new("L", (64, 64), 90).save(tmp_path / "films" / "a.png")
    ray.init(
        num_cpus=2,
        num_gpus=1,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    try:
        args = ["batch", str(tmp_path / "films"), "--out", str(tmp_path / "out"), "--workers", "1"]
        status = main([*args, "--model", f"local-dir:{tiny_model_dir}", "--gpus-per-worker", "1"])
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert status == 3 and "PyTorch sees no CUDA device on this machine" in err
    assert not list((tmp_path / "out").glob("part-*.parquet"))
