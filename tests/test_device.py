"""`meddx.device`: MEDDX_DEVICE / --device, the auto choice, the refusal of a missing GPU, the mixed-precision
gate; and (marked ``gpu``) the chain on a real CUDA device where one exists."""

from __future__ import annotations

import pytest
import torch

from meddx.config import Settings
from meddx.device import autocast_dtype, parse_device, resolve_device
from meddx.errors import ModelError


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


def test_this_release_runs_on_the_cpu_and_refuses_a_named_gpu(monkeypatch):
    from meddx.device import analysis_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert analysis_device("auto") == torch.device("cpu")  # said once in the log, never silently for a name
    assert analysis_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="runs the analysis on the CPU only"):
        analysis_device("cuda")


def test_the_cli_refuses_cuda_on_a_machine_without_one(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from meddx.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    film = tmp_path / "film.png"
    Image.new("L", (96, 96), 90).save(film)
    status = main(["analyze", str(film), "--model", f"local-dir:{tiny_model_dir}", "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 3 and "no CUDA device" in err and err.count("\n") == 1
