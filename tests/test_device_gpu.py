"""The chain on a real CUDA device against the CPU, for every family: the analysis (scores, maps, the model
card), Integrated Gradients batched by GPU memory, training embeddings, and a ``batch`` run with one GPU
actor. Marked ``gpu``; skipped where PyTorch sees no CUDA device (CI has none)."""

from __future__ import annotations

import glob
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meddx.config import Settings
from meddx.device import AUTOCAST_MAX_DELTA
from meddx.model.encoder import clear_cache
from tests.conftest import OTHER_FAMILIES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
FAMILIES = ("open_clip_hf", *OTHER_FAMILIES)
LABELS = ["effusion", "pneumothorax", "nodule", "cardiomegaly"]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _film(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (220, 180), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


MAP_TOLERANCE = 0.02
"""Largest mean absolute difference of two maps on the film (each in [0, 1]) counted as the same map."""


def _map_difference(a, b) -> float:
    return float(np.abs(a.on_film() - b.on_film()).mean())


def _settings(folder: Path, device: str, cache: Path) -> Settings:
    return Settings(model=f"local-dir:{folder}", threads=1, hold_back=False, device=device, cache_dir=cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_analysis_on_the_gpu_gives_the_cpus_scores_and_maps(family_model_dirs, family, tmp_path):
    from meddx.pipeline import analyze, warm_up

    cpu = _settings(family_model_dirs[family], "cpu", tmp_path / "cpu")
    gpu = _settings(family_model_dirs[family], "cuda", tmp_path / "gpu")
    encoder = warm_up(gpu)  # gates mixed precision; the ONNX stem is not used on a GPU
    assert encoder.device.type == "cuda" and encoder.runtime_stem is None
    on_cpu = analyze(_film(), labels=LABELS, settings=cpu, top_k=2)
    on_gpu = analyze(_film(), labels=LABELS, settings=gpu, top_k=2)
    for a, b in zip(on_cpu.findings, on_gpu.findings, strict=True):  # TF32 convolutions and autocast
        assert a.id == b.id and abs(a.zero_shot - b.zero_shot) <= AUTOCAST_MAX_DELTA
    assert set(on_gpu.maps) == set(on_cpu.maps) and len(on_gpu.maps) == 2
    for fid, film_map in on_gpu.maps.items():
        assert _map_difference(film_map, on_cpu.maps[fid]) <= MAP_TOLERANCE
    card = on_gpu.to_dict()["model"]["card"]
    assert card["device"].startswith("CUDA: ") and card["precision"] in ("fp32", "bfloat16", "float16")


def test_integrated_gradients_on_the_gpu_is_batched_by_its_memory(family_model_dirs, tmp_path):
    from meddx.explain.gpu_batch import per_item_bytes
    from meddx.pipeline import analyze

    gpu = _settings(family_model_dirs["siglip"], "cuda", tmp_path)
    cpu = replace(gpu, device="cpu")
    on_gpu = analyze(_film(1), labels=LABELS, settings=gpu, method="integrated_gradients", top_k=1)
    on_cpu = analyze(_film(1), labels=LABELS, settings=cpu, method="integrated_gradients", top_k=1)
    (fid,) = on_gpu.maps
    assert _map_difference(on_gpu.maps[fid], on_cpu.maps[fid]) <= MAP_TOLERANCE
    from meddx.model.encoder import load_encoder

    encoder = load_encoder(gpu.model, device="cuda")
    pixels = torch.zeros(1, 3, encoder.image_size, encoder.image_size, device=encoder.device)
    assert per_item_bytes(encoder.visual, pixels) > 0


def test_training_embeddings_on_the_gpu_equal_the_cpus(family_model_dirs):
    from meddx.model.encoder import load_encoder

    spec = f"local-dir:{family_model_dirs['open_clip_hf']}"
    on_cpu, on_gpu = load_encoder(spec, device="cpu"), load_encoder(spec, device="cuda")
    pixels = torch.stack(
        [on_cpu.preprocess(Image.open(io.BytesIO(_film(n))).convert("RGB"))[0] for n in range(4)]
    )
    a, b = on_cpu.embed_images(pixels), on_gpu.embed_images(pixels)
    assert b.device.type == "cpu"  # embeddings come back to the host for heads and caches
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_batch_with_one_gpu_actor_gives_the_rows_of_analyze(family_model_dirs, tmp_path, local_ray):
    import pyarrow.parquet as pq

    from meddx.cli import main
    from meddx.pipeline import analyze

    films = tmp_path / "films"
    films.mkdir()
    for n in range(3):
        (films / f"f{n}.png").write_bytes(_film(n))
    model = f"local-dir:{family_model_dirs['open_clip_hf']}"
    out = tmp_path / "out"
    args = [
        "batch",
        str(films),
        "--out",
        str(out),
        "--model",
        model,
        "--workers",
        "1",
        "--gpus-per-worker",
        "1",
    ]
    assert main([*args, "--labels", ",".join(LABELS)]) == 0
    rows = pq.read_table(sorted(glob.glob(str(out / "part-*.parquet")))).to_pylist()
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    settings = Settings(model=model, threads=1, device="cpu")
    for row in rows:
        analysis = analyze(films / Path(row["source"]).name, labels=LABELS, settings=settings, top_k=0)
        for finding in analysis.findings:
            assert abs(row[f"prob__{finding.id}"] - finding.probability) <= AUTOCAST_MAX_DELTA
