"""Model faults are refused at start-up (`warm_up`, ``app.py``) with one line that says how to fix them.

Each fault is a damaged copy of the tiny model (or a trained head made for other weights). `warm_up` is
what ``app.py`` runs on its model-loading thread while the page already serves (`meddx.app.loading`); a
fault stops the app before any analysis is answered: ``app.py`` prints ``meddx: <message>`` and exits with
status 3 (Gradio may have printed its address by then).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from meddx.config import Settings
from meddx.errors import ModelError
from meddx.model.head import HEAD_FORMAT
from meddx.model.head_store import HEAD_CONFIG, HEAD_WEIGHTS
from meddx.model.spec import CONFIG_NAME, TEXT_TOWER_DIR, WEIGHT_NAMES
from meddx.pipeline import warm_up

ROOT = Path(__file__).resolve().parents[1]
FIXES = ("download", "Check MEDDX_MODEL", "Check MEDDX_PROBE", "Fix:", "train")
"""Every message names one of these ways out."""


def _edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text(encoding="utf-8"))
    edit(config)
    path.write_text(json.dumps(config), encoding="utf-8")


def _weights(folder: Path) -> Path:
    return next(folder / name for name in WEIGHT_NAMES if (folder / name).is_file())


def _truncate_weights(folder: Path) -> None:
    path = _weights(folder)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_embed_dim(config: dict) -> None:
    config["model_cfg"]["embed_dim"] = 48  # the saved projections are 32-d


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    # name: (what is done to a copy of the tiny model, a phrase of the message)
    "folder_missing": (shutil.rmtree, "does not exist"),
    "weights_missing": (lambda f: _weights(f).unlink(), "has a config but no weights"),
    "weights_truncated": (_truncate_weights, "could not be built from its files"),
    "weights_garbage": (lambda f: _weights(f).write_bytes(b"\x00garbage" * 64), "could not be built"),
    "config_missing": (lambda f: (f / CONFIG_NAME).unlink(), f"has no {CONFIG_NAME}"),
    "config_not_json": (lambda f: (f / CONFIG_NAME).write_text("{not json"), "not a valid open_clip config"),
    "config_no_model": (lambda f: _edit_config(f, lambda c: c.pop("model_cfg")), "not a valid open_clip"),
    "config_wrong_size": (lambda f: _edit_config(f, _set_embed_dim), "size mismatch for"),
    "text_tower_missing": (lambda f: shutil.rmtree(f / TEXT_TOWER_DIR), "copy the complete folder"),
    "vocabulary_missing": (
        lambda f: (f / TEXT_TOWER_DIR / "vocab.txt").unlink(),
        "has no tokenizer vocabulary",
    ),
}


def check_message(message: str, phrase: str) -> None:
    assert phrase in message, message
    assert "\n" not in message and "Traceback" not in message, message
    assert any(fix in message for fix in FIXES), message


def broken_copy(tiny_model_dir: Path, folder: Path, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(tiny_model_dir, folder)
    damage(folder)
    return folder


def write_head(folder: Path, *, revision: str, embed_dim: int = 32) -> Path:
    """A trained-head folder for the weights named by ``revision`` (``sha256:...`` of an unversioned one)."""
    folder.mkdir(parents=True)
    save_file({"weight": torch.zeros(1, embed_dim), "bias": torch.zeros(1)}, str(folder / HEAD_WEIGHTS))
    spec = "local-dir:/models/other-clip"
    metadata = {
        "format": HEAD_FORMAT,
        "finding_ids": ["nodule"],
        "labels": ["Lung nodule"],
        "encoder": {"spec": spec, "model": spec, "revision": revision, "embed_dim": embed_dim},
        "calibration": {"scale": [1.0], "bias": [0.0]},
        "thresholds": {"fine-tuned": {"nodule": 0.5}, "both": {"nodule": 0.5}},
    }
    (folder / HEAD_CONFIG).write_text(json.dumps(metadata), encoding="utf-8")
    return folder


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_broken_model_is_refused_by_warm_up(fault: str, tiny_model_dir: Path, tmp_path: Path):
    damage, phrase = FAULTS[fault]
    folder = broken_copy(tiny_model_dir, tmp_path / fault, damage)
    with pytest.raises(ModelError) as raised:
        warm_up(Settings(model=f"local-dir:{folder}", threads=1))
    check_message(str(raised.value), phrase)


@pytest.mark.parametrize(
    ("revision", "embed_dim"),
    [("sha256:" + "0" * 64, 32), ("sha256:" + "0" * 64, 512)],
    ids=["weights", "size"],
)
def test_a_head_trained_for_another_encoder_is_refused_by_warm_up(
    revision, embed_dim, tiny_model_dir, tmp_path
):
    head = write_head(tmp_path / "head", revision=revision, embed_dim=embed_dim)
    settings = Settings(model=f"local-dir:{tiny_model_dir}", probe=f"local-dir:{head}", threads=1)
    with pytest.raises(ModelError) as raised:
        warm_up(settings)
    check_message(str(raised.value), "This head was trained on local-dir:/models/other-clip")


def test_a_missing_or_damaged_head_is_refused_by_warm_up(tiny_model_dir, tmp_path):
    model = f"local-dir:{tiny_model_dir}"
    with pytest.raises(ModelError) as raised:
        warm_up(Settings(model=model, probe=f"local-dir:{tmp_path / 'nohead'}", threads=1))
    check_message(str(raised.value), "does not exist")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / HEAD_WEIGHTS).write_bytes(b"not safetensors")
    (damaged / HEAD_CONFIG).write_text("{}")
    with pytest.raises(ModelError) as raised:
        warm_up(Settings(model=model, probe=f"local-dir:{damaged}", threads=1))
    check_message(str(raised.value), "is damaged")


def run_app(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python app.py ARGS``, which must stop by itself; returns the result and the seconds it took."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MEDDX_THREADS": "1", **env},
        timeout=300,
    )
    return result, time.perf_counter() - start


GRADIO_LAUNCH_LINES = ("* Running on", "* To create a public link", "🔨 Launching MCP", "* Streamable HTTP")


def check_refusal(result: subprocess.CompletedProcess, phrase: str) -> None:
    """Exit status 3 and exactly one line on stderr, ``meddx: <message>``; on stdout at most Gradio's
    address (the page may serve before the model has failed to load)."""
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meddx: "), result.stderr
    check_message(lines[0], phrase)
    assert all(line.startswith(GRADIO_LAUNCH_LINES) for line in result.stdout.splitlines() if line.strip())


@pytest.mark.slow
def test_app_py_exits_at_start_with_one_line_for_a_missing_model(tmp_path):
    result, seconds = run_app("--model", f"local-dir:{tmp_path / 'BAD'}")
    check_refusal(result, "does not exist")
    assert seconds < 60, f"{seconds:.0f} s"


@pytest.mark.slow
def test_app_py_exits_at_start_for_a_broken_model_or_a_foreign_head(tiny_model_dir, tmp_path):
    damage, phrase = FAULTS["config_wrong_size"]
    folder = broken_copy(tiny_model_dir, tmp_path / "wrong", damage)
    check_refusal(run_app("--model", f"local-dir:{folder}")[0], phrase)

    head = write_head(tmp_path / "head", revision="sha256:" + "0" * 64)
    result, _ = run_app("--model", f"local-dir:{tiny_model_dir}", MEDDX_PROBE=f"local-dir:{head}")
    check_refusal(result, "This head was trained on")
