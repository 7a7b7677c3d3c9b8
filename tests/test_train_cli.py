"""Data specs, the embedding cache, and ``train`` / ``eval`` end to end on synthetic films, tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meddx.cli.train import run_eval, run_train
from meddx.errors import InputError
from meddx.model.encoder import load_encoder
from meddx.model.head_store import HEAD_FILES, load_head
from meddx.train.datasets import load_data
from meddx.train.embedding_cache import EmbeddingCache, embed_sources
from tests.helpers import FakeHubApi, write_film_folder


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-films")
    return {
        "train": write_film_folder(root / "train", positives=24, negatives=48, seed=5),
        "held_out": write_film_folder(root / "held_out", positives=12, negatives=24, seed=6),
        "cache": root / "embeddings",
    }


@pytest.fixture
def model_spec(tiny_model_dir) -> str:
    return f"local-dir:{tiny_model_dir}"


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _images(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


# --- data specs -----------------------------------------------------------------------------------------


def test_image_folder(films):
    data = load_data(str(films["train"]))
    assert data.kind == "image folder" and data.description == "image folder"
    assert data.labels == ("nodule",) and len(data) == 72
    assert data.counts() == {"nodule": {"positive": 24, "negative": 48}}
    positive = np.array(["nodule" in str(p.parent.name) for p in data.sources])
    assert np.array_equal(data.targets[:, 0].astype(bool), positive)


def test_csv_with_label_columns(films, tmp_path):
    images = _images(films["train"])[:6]
    header = ["Path", "patient_age", "Effusion", "Nodule", "No Finding", "Rib notch", "view"]
    rows = [
        [str(images[0]), 61, 1, 0, 0, 0, "PA"],
        [str(images[1]), 70, 1, 1, 0, 1, "PA"],
        [str(images[2]), 55, "", 0, 1, 0, "AP"],
        [str(images[3]), 40, 0, 1, "", 0, "PA"],
        [str(images[4]), 33, 0, 0, 1, 1, "PA"],
        [str(images[5]), 80, 0, 0, 1, 0, "PA"],
    ]
    data = load_data(str(_write_csv(tmp_path / "labels.csv", header, rows)))
    assert data.kind == "CSV" and data.labels == ("effusion", "nodule", "rib_notch")
    assert data.findings[2].custom  # an unknown name becomes a custom label
    assert data.targets.tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    only = data.select(["nodule"])
    assert only.labels == ("nodule",) and only.targets[:, 0].tolist() == [0, 1, 0, 1, 0, 0]
    with pytest.raises(InputError, match="'cardiomegaly' is not in the data"):
        data.select(["cardiomegaly"])

    rows[2][2] = -1
    with pytest.raises(InputError, match="'Effusion' holds '-1' in row 3"):
        load_data(str(_write_csv(tmp_path / "uncertain.csv", header, rows)))


def test_csv_and_jsonl_with_a_labels_column(films, tmp_path):
    images = _images(films["train"])[:4]
    (tmp_path / "img").mkdir()
    for image in images:  # relative paths are read from the file's folder
        (tmp_path / "img" / image.name).write_bytes(image.read_bytes())
    names = [f"img/{p.name}" for p in images]
    rows = [[names[0], "Nodule|Pleural effusion"], [names[1], "normal"], [names[2], "nodule"], [names[3], ""]]
    data = load_data(str(_write_csv(tmp_path / "labels.csv", ["image", "labels"], rows)))
    assert data.labels == ("nodule", "effusion")
    assert data.targets.tolist() == [[1, 1], [0, 0], [1, 0], [0, 0]]
    lines = [{"file": names[0], "labels": ["effusion"]}, {"file": names[1], "labels": "nodule, effusion"}]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    data = load_data(str(tmp_path / "labels.jsonl"))
    assert data.kind == "JSONL" and data.labels == ("effusion", "nodule")
    assert data.targets.tolist() == [[1, 0], [1, 1]]


def test_bad_data_specs(tmp_path, films):
    with pytest.raises(InputError, match="not a folder, a file or an 'hf:' dataset"):
        load_data(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"use a \.csv or \.jsonl file"):
        load_data(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class subfolders with images"):
        load_data(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="needs an image path column"):
        load_data(str(_write_csv(tmp_path / "a.csv", ["name", "nodule"], [["x.png", 1]])))
    with pytest.raises(InputError, match=r"row 1: image file 'gone\.png' not found"):
        load_data(str(_write_csv(tmp_path / "b.csv", ["path", "nodule"], [["gone.png", 1]])))
    image = str(_images(films["train"])[0])
    with pytest.raises(InputError, match="has no labels"):
        load_data(str(_write_csv(tmp_path / "c.csv", ["path", "comment"], [[image, "fine"]])))
    (tmp_path / "d.jsonl").write_text('{"path": "x"}\nnot json\n')
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        load_data(str(tmp_path / "d.jsonl"))


def test_hf_dataset_from_a_local_folder(films):
    pytest.importorskip("datasets")
    data = load_data(f"hf:{films['held_out']}")
    assert data.kind == "Hub dataset" and data.description == "Hub dataset"  # no local path stored
    assert data.labels == ("nodule",) and data.counts()["nodule"] == {"positive": 12, "negative": 24}
    assert all(isinstance(s, bytes | Path) for s in data.sources)
    with pytest.raises(InputError, match="could not be loaded"):
        load_data("hf:nobody/no-such-dataset")


# --- embedding cache ------------------------------------------------------------------------------------


def test_embedding_cache_is_keyed_by_content_and_model(
    films, tmp_path, tiny_model_dir, other_model_dir, monkeypatch
):
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    cache = EmbeddingCache(tmp_path / "cache")
    images = _images(films["held_out"])[:3]
    first = embed_sources(encoder, images, cache=cache)
    assert first.shape == (3, 32) and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 3
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(images[0].read_bytes())

    def refuse(pixels):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(encoder, "embed_images", refuse)
    again = embed_sources(encoder, [renamed, *images, images[0].read_bytes()], cache=cache)
    assert torch.equal(again, torch.cat([first[:1], first, first[:1]]))
    monkeypatch.undo()
    other = load_encoder(f"local-dir:{other_model_dir}")
    assert not torch.equal(embed_sources(other, images[:1], cache=cache), first[:1])
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one folder per model identity


def test_unreadable_image_is_named(tmp_path, tiny_model_dir):
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"broken\.png"):
        embed_sources(encoder, [tmp_path / "broken.png"], names=["broken.png"])


# --- train and eval -------------------------------------------------------------------------------------


def test_train_then_eval_end_to_end(films, tmp_path, model_spec, capsys):
    cache = ["--cache-dir", str(films["cache"])]
    head_dir = tmp_path / "head"
    code = run_train(["--data", str(films["train"]), "--out", str(head_dir), "--model", model_spec, *cache])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    # 24 positives, 20 % validation: about 5 positives there, under the 20 a threshold needs
    assert "warning: the validation split has 5 positive images for nodule, fewer than 20" in captured.err
    assert sorted(p.name for p in head_dir.iterdir()) == sorted(HEAD_FILES)
    assert "Validation metrics" in out and f"MEDDX_PROBE=local-dir:{head_dir}" in out

    images = _images(films["train"])
    rows = [[str(p), int(p.parent.name == "nodule"), 0] for p in images]
    rows[0][2] = rows[1][2] = rows[2][2] = 1  # a second, custom label with a few positives
    rows[3][2] = 1
    csv_path = _write_csv(tmp_path / "train.csv", ["path", "nodule", "calcified granuloma"], rows)
    csv_head = tmp_path / "csv-head"
    code = run_train(
        ["--data", str(csv_path), "--out", str(csv_head), "--model", model_spec, "--epochs", "20", *cache]
    )
    assert code == 0, capsys.readouterr()
    assert load_head(f"local-dir:{csv_head}").finding_ids == ("nodule", "calcified_granuloma")

    report_path, plots = tmp_path / "eval.json", tmp_path / "plots"
    args = ["--data", str(films["held_out"]), "--model", model_spec, "--probe", f"local-dir:{head_dir}"]
    assert run_eval([*args, *cache, "--json", str(report_path), "--plot", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "zero-shot" in out and "fine-tuned" in out and "both" in out
    assert "In brackets: 95 % bootstrap intervals" in out and "1000 resamples, seed 0" in out
    report = json.loads(report_path.read_text())
    nodule = report["findings"]["nodule"]
    for mode in ("zero-shot", "fine-tuned", "both"):
        metrics = nodule[mode]
        assert set(metrics["ci"]) == {"auroc", "auprc", "sensitivity", "specificity", "f1", "ece"}
        for name, (low, high) in metrics["ci"].items():
            assert low <= metrics[name] <= high, (mode, name)
            assert f"{metrics[name]:.3f} ({low:.2f}-{high:.2f})" in out
    assert set(nodule) == {"label", "zero-shot", "fine-tuned", "both"}
    for key in ("auroc", "auprc", "f1", "ece", "sensitivity", "specificity", "threshold"):
        assert isinstance(nodule["fine-tuned"][key], float)
    assert isinstance(nodule["fine-tuned"]["ece_uncalibrated"], float)
    assert nodule["zero-shot"]["positives"] == 12 and report["probe"]["spec"] == f"local-dir:{head_dir}"
    assert sorted(p.name for p in plots.iterdir()) == ["reliability_nodule.png", "roc_nodule.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())


def test_zero_shot_only_eval(films, model_spec, capsys, tmp_path):
    report_path = tmp_path / "zs.json"
    args = ["--data", str(films["held_out"]), "--model", model_spec, "--cache-dir", str(films["cache"])]
    assert run_eval([*args, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["probe"] is None and set(report["findings"]["nodule"]) == {"label", "zero-shot"}


def test_errors_are_one_line_and_exit_non_zero(films, tmp_path, model_spec, capsys):
    assert run_train(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "h")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert run_train(["--data", str(films["train"]), "--out", str(tmp_path / "h"), "--push-to-hub", "x"]) == 2
    assert "OWNER/NAME" in capsys.readouterr().err
    assert run_eval(["--data", str(films["held_out"]), "--probe", f"local-dir:{tmp_path / 'none'}"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("meddx eval: Trained head folder") and err.count("\n") == 1


def test_head_on_another_model_is_refused_by_eval(films, tmp_path, model_spec, other_model_dir, capsys):
    cache = ["--cache-dir", str(films["cache"])]
    head_dir = tmp_path / "head"
    args = ["--data", str(films["train"]), "--out", str(head_dir), "--model", model_spec, "--epochs", "5"]
    assert run_train(args + cache) == 0
    other = f"local-dir:{other_model_dir}"
    capsys.readouterr()
    code = run_eval(["--data", str(films["held_out"]), "--model", other, "--probe", f"local-dir:{head_dir}"])
    assert code == 3 and "This head was trained on" in capsys.readouterr().err


def test_train_pushes_to_hub_with_a_fake_api(films, tmp_path, model_spec, capsys, monkeypatch):
    import huggingface_hub

    api = FakeHubApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    args = ["--data", str(films["train"]), "--out", str(tmp_path / "head"), "--model", model_spec]
    code = run_train([*args, "--epochs", "5", "--cache-dir", str(films["cache"]), "--push-to-hub", "me/head"])
    assert code == 0
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.uploaded == sorted(HEAD_FILES)
    assert "MEDDX_PROBE=hf-hub:me/head" in capsys.readouterr().out
