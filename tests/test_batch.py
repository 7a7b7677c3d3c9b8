"""`python -m meddx batch` on a local Ray (2 CPUs, a small object store) with the tiny model.

Rows must equal `meddx.pipeline.analyze`'s, bad films must be error rows with analyze's messages, a run whose
output was damaged by a kill must complete without duplicates, and nothing identifying may reach the output.
Ray is started once for the module and shut down at its end.
"""

from __future__ import annotations

import csv
import glob
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.config import Settings
from meddx.pipeline import analyze
from tests.helpers import PLANTED_IDENTIFIERS, write_dicom

pytestmark = pytest.mark.slow

NOTES = "Patient Zebedee Quux, 71, smoker; large right pleural effusion, no pneumothorax."
BAD = {
    "bad.png": "is not an image meddx can read",
    "empty.dcm": "is empty (0 bytes)",
    "nested/truncated.png": "",  # damaged: whatever imaging says
}


def _png(path: Path, seed: int, shape=(220, 190)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("films")
    for i in range(5):
        _png(root / f"film{i}.png", i, (200 + 16 * i, 180))
    _png(root / "nested" / "deeper" / "film5.png", 5)
    write_dicom(root / "nested" / "film6.dcm")
    (root / "bad.png").write_bytes(b"not an image at all")
    (root / "empty.dcm").write_bytes(b"")
    good = (root / "film0.png").read_bytes()
    (root / "nested" / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / ".hidden.png").write_bytes(good)  # hidden files are not listed
    return root


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return sorted(
        pq.read_table(sorted(glob.glob(str(out / "part-*.parquet")))).to_pylist(), key=lambda r: r["id"]
    )


def _batch(*args: str) -> int:
    return main(["batch", *args])


@pytest.fixture(scope="module")
def folder_run(films, tiny_model_dir, local_ray, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "results"
    model = f"local-dir:{tiny_model_dir}"
    args = [str(films), "--out", str(out), "--model", model, "--maps", "2", "--workers", "2"]
    assert _batch(*args, "--batch-size", "3", "--rows-per-part", "3") == 0
    return out


def _analyze(path: Path, model_dir: Path, notes: str | None = None, top_k: int = 2):
    settings = Settings(model=f"local-dir:{model_dir}", threads=1)
    return analyze(path, notes, settings=settings, top_k=top_k, filename=path.name)


def test_without_ray_batch_says_what_to_install(films, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert _batch(str(films), "--out", str(tmp_path / "out")) == 3
    err = capsys.readouterr().err.strip()
    assert err == (
        'meddx: batch needs Ray Data: pip install "meddx[scale]" (or pip install "ray[data]==2.60.0").'
    )
    assert not (tmp_path / "out").exists()


def test_bad_options_and_models_are_refused_before_ray_starts(films, tiny_model_dir, tmp_path, capsys):
    pytest.importorskip("ray")
    out = str(tmp_path / "out")
    model = f"local-dir:{tiny_model_dir}"
    assert _batch(str(films), "--out", out, "--model", model, "--method", "magic") == 2
    assert "Unknown explanation method 'magic'" in capsys.readouterr().err
    assert _batch(str(films), "--out", out, "--model", model, "--maps", "9") == 2
    assert _batch(str(tmp_path / "nothing"), "--out", out, "--model", model) == 2
    assert "is not a folder, a .csv or .parquet manifest" in capsys.readouterr().err
    assert _batch(str(films), "--out", out, "--model", f"local-dir:{tmp_path / 'no-model'}") == 3
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_folder_rows_equal_analyze_and_bad_films_are_error_rows(folder_run, films, tiny_model_dir):
    rows = _rows(folder_run)
    ids = [r["id"] for r in rows]
    good = [f"film{i}.png" for i in range(5)] + ["nested/deeper/film5.png", "nested/film6.dcm"]
    assert ids == sorted([*good, *BAD])
    assert len(glob.glob(str(folder_run / "part-*.parquet"))) >= 3  # written in parts as results came
    for row in rows:
        path = films / row["id"]
        assert row["source"] == row["id"] and row["meddx_version"]
        if row["id"] in BAD:
            with pytest.raises(Exception) as raised:
                _analyze(path, tiny_model_dir)
            assert row["error"] == str(raised.value) and row["error_kind"] == "decode"
            assert BAD[row["id"]] in row["error"]
            assert row["prob__effusion"] is None
            continue
        assert row["error"] is None and row["error_kind"] is None
        analysis = _analyze(path, tiny_model_dir)
        for finding in analysis.findings:
            assert abs(row[f"prob__{finding.id}"] - finding.probability) <= 1e-6
            assert abs(row[f"zero_shot__{finding.id}"] - finding.zero_shot) <= 1e-6
        regions = [{"finding": f.id, **region.to_dict()} for f in analysis.findings for region in f.regions]
        assert row["regions"] == regions and len({r["finding"] for r in regions}) <= 2
        assert row["model_spec"] == f"local-dir:{tiny_model_dir}" and row["model_revision"]
        assert row["warnings"] == analysis.warnings and row["has_notes"] is False
        assert "fine_tuned__effusion" not in row and "flagged__effusion" not in row  # no head: no flags
    dicom = next(r for r in rows if r["id"] == "nested/film6.dcm")
    assert dicom["source_format"] == "dicom" and dicom["view_position"] == "PA"
    stored = b"".join(p.read_bytes() for p in folder_run.iterdir())
    for value in PLANTED_IDENTIFIERS.values():
        assert value.encode() not in stored


def test_summary_counts_errors_by_kind(folder_run):
    import json

    summary = json.loads((folder_run / "summary.json").read_text())
    assert summary["films_in_source"] == 10 and summary["analysed_this_run"] == 10
    assert summary["ok"] == 7 and summary["errors_by_kind"] == {"decode": 3}
    assert summary["films_per_s"] > 0 and summary["ray_address"] == "local"


def test_a_killed_run_resumes_without_duplicates(folder_run, films, tiny_model_dir, tmp_path, capsys):
    import json

    out = tmp_path / "results"
    shutil.copytree(folder_run, out)
    before = {r["id"]: r for r in _rows(out)}
    parts = sorted(out.glob("part-*.parquet"))
    parts[0].unlink()  # its films were never written
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # a damaged part: its films are analysed again
    (out / ".part-killed-00009.parquet.tmp").write_bytes(b"PAR1 half")  # a kill while writing
    kept = len(_rows_of(parts[2:]))

    model = f"local-dir:{tiny_model_dir}"
    args = [str(films), "--out", str(out), "--model", model, "--maps", "2"]
    assert _batch(*args, "--workers", "1") == 0
    after = _rows(out)
    assert sorted(r["id"] for r in after) == sorted(before)  # every film exactly once
    assert not list(out.glob("*.tmp"))
    for row in after:
        assert row["prob__nodule"] == before[row["id"]]["prob__nodule"]
        assert row["error"] == before[row["id"]]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["already_done"] == kept and summary["analysed_this_run"] == 10 - kept
    assert summary["rows_in_output"] == 10
    assert f"skipped {kept} already done" in capsys.readouterr().err

    # Nothing left: a third run starts no Ray job at all; other settings are refused.
    assert _batch(*args) == 0
    assert json.loads((out / "summary.json").read_text())["analysed_this_run"] == 0
    assert _batch(str(films), "--out", str(out), "--model", model, "--maps", "1") == 2
    assert "other settings (maps)" in capsys.readouterr().err


def _rows_of(parts: list[Path]) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for part in parts for row in pq.read_table(part).to_pylist()]


def test_a_calibration_flags_at_its_thresholds(films, tiny_model_dir, local_ray, tmp_path, monkeypatch):
    from tests.helpers import write_calibration

    folder = tmp_path / "films"
    for name in ("film0.png", "film1.png"):
        _png(folder / name, int(name[4]))
    first = _analyze(folder / "film0.png", tiny_model_dir, top_k=0)
    cut = next(
        f for f in first.findings if f.id == "effusion"
    ).image_probability  # identity calibration: film0 sits exactly on it
    calibration = write_calibration(tmp_path / "cal", tiny_model_dir, {"effusion": cut, "nodule": None})
    monkeypatch.setenv("MEDDX_CALIBRATION", str(calibration))
    out = tmp_path / "out"
    assert (
        _batch(str(folder), "--out", str(out), "--model", f"local-dir:{tiny_model_dir}", "--maps", "none")
        == 0
    )
    settings = Settings(model=f"local-dir:{tiny_model_dir}", threads=1, calibration=str(calibration))
    for row in _rows(out):
        analysis = analyze(folder / row["id"], None, settings=settings, top_k=0, filename=row["id"])
        for finding in analysis.findings:
            assert row[f"flagged__{finding.id}"] == finding.flagged
            assert abs(row[f"prob__{finding.id}"] - finding.probability) <= 1e-6
        assert row["flagged__nodule"] is False  # calibrated without a threshold: never flagged
    assert _rows(out)[0]["flagged__effusion"] is True
    assert json.loads((out / "batch.json").read_text())["calibration"] == str(calibration)


def test_manifest_with_notes_and_ids(films, tiny_model_dir, local_ray, tmp_path):
    manifest = tmp_path / "manifest.csv"
    rows = [
        ["study-1", str(films / "film1.png"), NOTES],
        ["study-2", "../gone.png", ""],
        ["study-3", str(films / "nested" / "film6.dcm"), "no fever"],
    ]
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["id", "path", "history"], *rows])
    out = tmp_path / "out"
    model = f"local-dir:{tiny_model_dir}"
    args = [str(manifest), "--out", str(out), "--model", model, "--notes-column", "history", "--workers", "1"]
    assert _batch(*args, "--labels", "effusion,pneumothorax,nodule") == 0
    result = {r["id"]: r for r in _rows(out)}
    assert sorted(result) == ["study-1", "study-2", "study-3"]
    assert result["study-2"]["error"] == "No such file." and result["study-2"]["source"] == "../gone.png"
    for film_id, path, notes in (
        (0, films / "film1.png", NOTES),
        (2, films / "nested" / "film6.dcm", "no fever"),
    ):
        row = result[rows[film_id][0]]
        assert row["has_notes"] is True and row["source"] == str(path)
        settings = Settings(model=model, threads=1)
        analysis = analyze(
            path, notes, labels=["effusion", "pneumothorax", "nodule"], settings=settings, top_k=0
        )
        for finding in analysis.findings:
            assert abs(row[f"prob__{finding.id}"] - finding.probability) <= 1e-6
            assert abs(row[f"image_prob__{finding.id}"] - finding.image_probability) <= 1e-6
        assert "prob__atelectasis" not in row
    moved = result["study-1"]["prob__effusion"] - result["study-1"]["image_prob__effusion"]
    assert moved > 0  # the notes' large effusion raised it
    stored = b"".join(p.read_bytes() for p in out.iterdir())
    for secret in (b"Zebedee", b"Quux", b"smoker", b"no fever"):
        assert secret not in stored


def test_parquet_manifest_and_hub_dataset_sources(films, tmp_path):
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meddx.batch.decode import decode_batch
    from meddx.batch.sources import read_source
    from meddx.errors import InputError

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image": ["film0.png", "film1.png"], "note": ["cough", None]}), manifest)
    source = read_source(str(manifest), notes_column="note")
    assert source.kind == "Parquet manifest"
    assert [(i["id"], i["notes"]) for i in source.items] == [("film0.png", "cough"), ("film1.png", None)]
    with pytest.raises(InputError, match="column 'text' is not in the data"):
        read_source(str(manifest), notes_column="text")

    hub_root = tmp_path / "hub"
    (hub_root / "normal").mkdir(parents=True)
    for i in range(3):
        shutil.copy(films / f"film{i}.png", hub_root / "normal" / f"x{i}.png")
    source = read_source(f"hf:{hub_root}")
    assert source.kind == "Hub dataset" and [i["id"] for i in source.items] == ["0", "1", "2"]
    decoded = decode_batch(
        pa.Table.from_pylist(source.items), settings=Settings(), hub=source.hub
    ).to_pylist()
    assert [d["error"] for d in decoded] == [None, None, None] and all(d["study"] for d in decoded)


def test_batch_embed_fills_the_cache_that_train_and_eval_read(
    films, tiny_model_dir, local_ray, tmp_path, capsys
):
    from meddx.model.encoder import load_encoder
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache, embed_sources

    data_dir = tmp_path / "labelled"
    for label, names in {
        "nodule": ["film0.png", "film1.png"],
        "no_finding": ["film2.png", "film3.png"],
    }.items():
        (data_dir / label).mkdir(parents=True)
        for name in names:
            shutil.copy(films / name, data_dir / label / name)
    shutil.copy(films / "film0.png", data_dir / "nodule" / "same-as-film0.png")  # embedded once
    cache_dir = tmp_path / "cache"
    model = f"local-dir:{tiny_model_dir}"
    args = ["batch-embed", "--data", str(data_dir), "--model", model, "--cache-dir", str(cache_dir)]
    assert main([*args, "--workers", "1", "--batch-size", "3"]) == 0
    assert "5 images: 0 already cached, 4 embedded, 0 unreadable" in capsys.readouterr().err

    data = load_data(str(data_dir))
    encoder = load_encoder(model)
    expected = embed_sources(encoder, data.sources, names=data.names)  # no cache: computed here
    encoder.model.encode_image = None  # train/eval's embedding step must not compute anything now
    try:
        cached = embed_sources(encoder, data.sources, names=data.names, cache=EmbeddingCache(cache_dir))
    finally:
        del encoder.model.encode_image
    assert (cached - expected).abs().max() < 1e-5
    assert main(args) == 0  # nothing left to do: no Ray job
    assert "4 already cached, 0 embedded" in capsys.readouterr().err


def test_eval_embeds_on_ray_with_ray_address(films, tiny_model_dir, local_ray, tmp_path, capsys):
    data_dir = tmp_path / "labelled"
    for label, names in {
        "nodule": ["film0.png", "film1.png"],
        "no_finding": ["film2.png", "film3.png"],
    }.items():
        (data_dir / label).mkdir(parents=True)
        for name in names:
            shutil.copy(films / name, data_dir / label / name)
    args = ["eval", "--data", str(data_dir), "--model", f"local-dir:{tiny_model_dir}"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--ray-address", "local", "--workers", "1"]
    assert main(args) == 0
    assert "embedded on Ray: 4 new, 0 already cached, 0 errors" in capsys.readouterr().err
    assert main(args) == 0  # the second run finds everything cached
    assert "embedded on Ray: 0 new, 4 already cached" in capsys.readouterr().err
    assert main([*args[:-4], "--no-cache", "--ray-address", "local"]) == 2


def test_gpus_the_cluster_does_not_have_are_refused_not_waited_for(
    films, tiny_model_dir, local_ray, tmp_path, capsys
):
    out = tmp_path / "out"
    model = f"local-dir:{tiny_model_dir}"
    assert _batch(str(films), "--out", str(out), "--model", model, "--gpus-per-worker", "1") == 2
    err = capsys.readouterr().err
    assert "--gpus-per-worker 1, but the Ray cluster has 0 GPU(s)" in err and "Traceback" not in err
    assert not glob.glob(str(out / "part-*.parquet"))
