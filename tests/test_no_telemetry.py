"""ONNX Runtime writes no telemetry: no session file (``.ses``) in TMPDIR, no device id or event queue under
the home folder, when meddx exports and runs its stem through the production warm-up (a fresh process each,
with TMPDIR, HOME and XDG_CACHE_HOME in empty temp folders). A control run of plain onnxruntime in the same
conditions writes them, so the check can see them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = """
import sys
from meddx.config import Settings
from meddx.model.stem import RuntimeStem
from meddx.pipeline import warm_up
encoder = warm_up(Settings(model=sys.argv[1], threads=1, cache_dir=sys.argv[2]))
assert isinstance(encoder.runtime_stem, RuntimeStem), encoder.runtime_stem
"""
PLAIN_RUNTIME = """
import numpy as np
import onnxruntime
from onnx import TensorProto, helper
value = helper.make_tensor_value_info
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [value("x", TensorProto.FLOAT, [1])], [value("y", TensorProto.FLOAT, [1])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
session.run(None, {"x": np.ones(1, np.float32)})
"""


def run_isolated(code: str, folder: Path, *args: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter with empty TMPDIR, HOME and XDG_CACHE_HOME under ``folder``; the
    files each of them holds afterwards."""
    places = {name: folder / name for name in ("tmp", "home", "cache")}
    for place in places.values():
        place.mkdir(parents=True)
    # ONNX Runtime stays silent under CI=true (as in our CI): the control must run as a user's machine does.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORT_") and key != "CI"}
    env.update(
        PYTHONPATH=str(ROOT),
        TMPDIR=str(places["tmp"]),
        HOME=str(places["home"]),
        XDG_CACHE_HOME=str(places["cache"]),
        MEDDX_THREADS="1",
    )
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, timeout=600, cwd=ROOT)
    return {
        name: sorted(str(p.relative_to(place)) for p in place.rglob("*") if p.is_file())
        for name, place in places.items()
    }


def telemetry_files(found: dict[str, list[str]]) -> list[str]:
    return [
        f"{name}/{path}"
        for name, paths in found.items()
        for path in paths
        if path.endswith(".ses") or "onnxruntime" in path.lower() or "Microsoft" in path
    ]


@pytest.mark.slow
def test_the_production_stem_leaves_no_telemetry_file(tiny_model_dir, tmp_path):
    control = run_isolated(PLAIN_RUNTIME, tmp_path / "control")
    assert any(p.endswith(".ses") for p in control["tmp"]), f"the control wrote no session file: {control}"
    assert telemetry_files(control)

    found = run_isolated(WARM_UP, tmp_path / "meddx", f"local-dir:{tiny_model_dir}", str(tmp_path / "models"))

    assert telemetry_files(found) == [], found
    assert list((tmp_path / "models").rglob("*.onnx")), "the stem must have been exported and run"
