"""`batch` on Ray with a tiny model of each non-default family: the rows equal `analyze` of the same films."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.config import Settings
from meddx.pipeline import analyze
from tests.conftest import OTHER_FAMILIES

LABELS = ["effusion", "pneumothorax", "nodule"]


@pytest.mark.slow
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_batch_rows_equal_analyze(family_model_dirs, family, local_ray, tmp_path):
    import pyarrow.parquet as pq

    films = tmp_path / "films"
    films.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (180 + 20 * i, 160), dtype=np.uint8)).save(films / f"f{i}.png")
    model = f"local-dir:{family_model_dirs[family]}"
    out = tmp_path / "out"
    args = ["batch", str(films), "--out", str(out), "--model", model, "--workers", "1", "--maps", "1"]
    assert main([*args, "--labels", ",".join(LABELS)]) == 0
    rows = pq.read_table(sorted(glob.glob(str(out / "part-*.parquet")))).to_pylist()
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    settings = Settings(model=model, threads=1)
    for row in rows:
        analysis = analyze(films / Path(row["source"]).name, labels=LABELS, settings=settings, top_k=0)
        for finding in analysis.findings:
            assert abs(row[f"prob__{finding.id}"] - finding.probability) <= 1e-5
