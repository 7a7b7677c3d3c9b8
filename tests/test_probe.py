"""The trained head: training beats zero-shot, calibration, the artifact, encoder checks, Hub load and push.

The data are synthetic films (`meddx.dev.tiny.synthetic_film`) in an image folder: ``nodule/`` films carry
a planted bright blob, ``no_finding/`` films do not. The encoder is the *untrained* tiny model: its
zero-shot "nodule" score is near chance (the text directions mean nothing yet), while its random image
features still carry some of the blob, so a head trained on them must beat zero-shot on held-out films.
That gap is the meaningful assertion: held-out AUROC 0.48 zero-shot vs 0.72 fine-tuned here, and 0.59-0.80
over six data seeds, so the 0.1 margin asked for is not luck; everything is seeded. The finding is rare
(25 %), so ``pos_weight`` inflates the raw head's probabilities, which is what calibration must undo:
held-out ECE fell (0.16 -> 0.10 here; 0.15-0.24 -> 0.06-0.10 over the six seeds). The planted model is
not needed (and costs ~30 s or more to train).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meddx.dev.tiny import make_tiny_hub_cache, write_to_hf_cache
from meddx.errors import InputError, ModelError
from meddx.model.encoder import load_encoder
from meddx.model.head import MODES, LinearHead, TrainedHead, combine, encoder_identity
from meddx.model.head_store import HEAD_FILES, load_head, publish_head, read_head, save_head
from meddx.model.spec import download_model
from meddx.model.zero_shot import text_directions
from meddx.train.datasets import load_data
from meddx.train.embedding_cache import EmbeddingCache, embed_sources
from meddx.train.fit import TrainingConfig, fit_head, fit_platt, split_indices, train_head
from meddx.train.metrics import auroc, average_precision, expected_calibration_error, youden_threshold
from tests.helpers import FakeHubApi, write_film_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("films")
    return {
        "train": write_film_folder(root / "train", positives=30, negatives=90, seed=0),
        "held_out": write_film_folder(root / "held_out", positives=25, negatives=75, seed=100),
        "cache": root / "embeddings",
    }


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return load_encoder(f"local-dir:{tiny_model_dir}")


@pytest.fixture(scope="module")
def embedded(folders, encoder) -> dict:
    cache = EmbeddingCache(folders["cache"])
    train, held_out = load_data(str(folders["train"])), load_data(str(folders["held_out"]))
    return {
        "train": train,
        "held_out": held_out,
        "train_x": embed_sources(encoder, train.sources, cache=cache),
        "held_out_x": embed_sources(encoder, held_out.sources, cache=cache),
        "directions": text_directions(encoder, list(train.findings)),
    }


@pytest.fixture(scope="module")
def trained(embedded, encoder) -> TrainedHead:
    return fit_head(
        embedded["train_x"], embedded["train"], embedded["directions"], identity=encoder_identity(encoder)
    )


def test_untrained_head_is_zero_shot(embedded):
    directions = embedded["directions"]
    head = LinearHead.from_directions(directions)
    with torch.no_grad():
        torch.testing.assert_close(head(embedded["held_out_x"]), directions.logits(embedded["held_out_x"]))


def test_trained_head_beats_zero_shot_on_held_out(trained, embedded):
    targets = embedded["held_out"].targets[:, 0]
    zero_shot = auroc(targets, embedded["directions"].logits(embedded["held_out_x"])[:, 0].numpy())
    fine_tuned = auroc(targets, trained.probabilities(embedded["held_out_x"])[:, 0].numpy())
    assert abs(zero_shot - 0.5) < 0.15  # the untrained model's prompts carry (almost) nothing
    assert fine_tuned > zero_shot + 0.1
    assert trained.metadata["training"]["best_epoch"] > 0


def test_calibration_lowers_held_out_ece(trained, embedded):
    targets = embedded["held_out"].targets[:, 0]
    raw = trained.probabilities(embedded["held_out_x"], calibrated=False)[:, 0].numpy()
    calibrated = trained.probabilities(embedded["held_out_x"])[:, 0].numpy()
    assert expected_calibration_error(targets, calibrated) < expected_calibration_error(targets, raw)
    assert auroc(targets, calibrated) == pytest.approx(auroc(targets, raw))  # Platt keeps the ranking


def test_training_is_reproducible(trained, embedded, encoder):
    again = fit_head(
        embedded["train_x"], embedded["train"], embedded["directions"], identity=encoder_identity(encoder)
    )
    assert torch.equal(again.linear.weight, trained.linear.weight)
    assert torch.equal(again.linear.bias, trained.linear.bias)
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    assert strip(again.metadata) == strip(trained.metadata)


def test_metadata_describes_data_and_encoder(trained, encoder, tiny_model_dir):
    meta = trained.metadata
    assert meta["finding_ids"] == ["nodule"] and meta["labels"] == ["Lung nodule"]
    assert meta["encoder"]["spec"] == f"local-dir:{tiny_model_dir}"
    assert meta["encoder"]["revision"].startswith("sha256:") and meta["encoder"]["embed_dim"] == 32
    assert meta["data"]["counts"] == {"nodule": {"positive": 30, "negative": 90}}
    assert meta["data"]["split"] == {"train": 96, "validation": 24}
    assert "film_" not in json.dumps(meta)  # no file names
    assert 0 < trained.thresholds["nodule"] < 1 and trained.threshold("nodule", "both") is not None
    assert trained.threshold("nodule", "zero-shot") is None
    assert set(meta["validation"]["metrics"]["nodule"]) >= {"auroc", "auprc", "f1", "ece", "ece_uncalibrated"}


def test_save_load_is_bit_exact(trained, tmp_path):
    folder = save_head(trained, tmp_path / "head")
    assert sorted(p.name for p in folder.iterdir()) == sorted(HEAD_FILES)
    loaded = load_head(f"local-dir:{folder}")
    assert torch.equal(loaded.linear.weight, trained.linear.weight)
    assert torch.equal(loaded.linear.bias, trained.linear.bias)
    assert loaded.metadata == trained.metadata
    embeddings = torch.randn(5, 32)
    assert torch.equal(loaded.probabilities(embeddings), trained.probabilities(embeddings))
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: meddx") and "not a diagnosis" in card
    positives = trained.metadata["validation"]["metrics"]["nodule"]["positives"]
    assert f"| Lung nodule | {positives} |" in card  # the validation metrics table


def test_predict_one_image(trained, embedded):
    probabilities = trained.predict(embedded["held_out_x"][0])
    assert set(probabilities) == {"nodule"} and 0 < probabilities["nodule"] < 1
    assert probabilities == trained.predict(embedded["held_out_x"][:1])
    with pytest.raises(ValueError, match="one image"):
        trained.predict(embedded["held_out_x"][:2])


def test_head_for_another_encoder_is_refused(trained, other_model_dir):
    other = load_encoder(f"local-dir:{other_model_dir}")
    with pytest.raises(ModelError, match="This head was trained on local-dir:") as info:
        trained.check_encoder(other)
    assert "python -m meddx train --model" in str(info.value)


def test_revision_and_embedding_size_must_match(trained, tiny_model_dir, isolated_hf_cache, tmp_path):
    spec = make_tiny_hub_cache(
        isolated_hf_cache,
        repo_id="meddx-test/probe-clip",
        text_repo_id="meddx-test/probe-bert",
        model_folder=tiny_model_dir,
    )
    hub = load_encoder(spec)
    identity = encoder_identity(hub).to_dict()

    def head_for(**encoder) -> TrainedHead:
        meta = json.loads(json.dumps(trained.metadata))
        meta["encoder"] = {**identity, **encoder}
        dim = meta["encoder"]["embed_dim"]
        return TrainedHead(LinearHead(torch.zeros(1, dim), torch.zeros(1)), meta)

    head_for().check_encoder(hub)
    with pytest.raises(ModelError, match=r"meddx-test/probe-clip@0{40}.*another revision"):
        head_for(revision="0" * 40).check_encoder(hub)
    with pytest.raises(ModelError, match="16-d embeddings"):
        head_for(embed_dim=16).check_encoder(hub)
    # A downloaded copy of the same repo and revision is the same encoder.
    copy = load_encoder(f"local-dir:{download_model(spec, tmp_path / 'copy')}")
    head_for().check_encoder(copy)
    with pytest.raises(ModelError):  # and the unversioned folder it was made from is not (no provenance)
        trained.check_encoder(hub)


def test_load_from_hf_cache(trained, tmp_path, isolated_hf_cache):
    folder = save_head(trained, tmp_path / "head")
    commit = write_to_hf_cache(folder, "meddx-test/nodule-head", isolated_hf_cache)
    for spec in ("hf-hub:meddx-test/nodule-head", f"hf-hub:meddx-test/nodule-head@{commit}"):
        head = load_head(spec)
        assert head.revision == commit and head.source == spec
        assert torch.equal(head.linear.weight, trained.linear.weight)
        assert head.metadata == trained.metadata
    with pytest.raises(ModelError, match=r"not in the local Hugging Face cache.*MEDDX_PROBE=local-dir:"):
        load_head("hf-hub:nobody/missing-head")


def test_bad_heads_say_what_to_do(trained, tmp_path):
    with pytest.raises(ModelError, match="Unrecognised probe spec"):
        load_head("s3://bucket/head")
    with pytest.raises(ModelError, match="does not exist"):
        load_head(f"local-dir:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"head\.safetensors and head\.json missing"):
        read_head(tmp_path / "empty")
    folder = save_head(trained, tmp_path / "damaged")
    meta = json.loads((folder / "head.json").read_text())
    meta["finding_ids"].append("effusion")
    (folder / "head.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="damaged"):
        read_head(folder)


def test_publish_with_fake_api(trained, tmp_path):
    folder = save_head(trained, tmp_path / "head")
    api = FakeHubApi()
    url = publish_head(folder, "someone/nodule-head", api=api)
    assert url == "https://huggingface.co/someone/nodule-head"
    (create, created), (upload, uploaded) = api.calls
    assert create == "create_repo" and created["exist_ok"] is True and created["repo_type"] == "model"
    assert upload == "upload_folder" and uploaded["repo_id"] == "someone/nodule-head"
    assert uploaded["allow_patterns"] == HEAD_FILES and api.uploaded == sorted(HEAD_FILES)


def test_publish_failure_says_how_to_fix(trained, tmp_path):
    class Offline(FakeHubApi):
        def create_repo(self, repo_id: str, **kwargs) -> str:
            raise ConnectionError("offline")

    with pytest.raises(ModelError, match="HF_TOKEN"):
        publish_head(save_head(trained, tmp_path / "head"), "someone/nodule-head", api=Offline())
    with pytest.raises(ModelError, match="not a trained meddx head"):
        publish_head(tmp_path, "someone/nodule-head", api=FakeHubApi())


def test_combine_modes():
    assert combine(0.2, 0.9, "zero-shot") == 0.2
    assert combine(0.2, 0.9, "fine-tuned") == 0.9
    assert combine(0.2, None, "fine-tuned") == 0.2 and combine(0.2, None, "both") == 0.2
    # "both": mean in log-odds space.
    assert combine(0.2, 0.8, "both") == pytest.approx(0.5)
    odds = np.sqrt((0.3 / 0.7) * (0.9 / 0.1))
    assert combine(0.3, 0.9, "both") == pytest.approx(odds / (1 + odds))
    np.testing.assert_allclose(combine(np.array([0.2, 0.3]), np.array([0.8, 0.3]), "both"), [0.5, 0.3])
    assert MODES == ("zero-shot", "fine-tuned", "both")
    with pytest.raises(InputError, match="Unknown scoring mode"):
        combine(0.2, 0.9, "average")


def test_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.random(200) < 0.3
    scores = np.round(rng.random(200) + targets * 0.3, 1)  # many ties
    assert auroc(targets, scores) == pytest.approx(roc_auc_score(targets, scores))
    assert average_precision(targets, scores) == pytest.approx(average_precision_score(targets, scores))
    assert auroc(np.ones(4), np.arange(4)) is None


def test_ece_and_youden_by_hand():
    targets = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    # Bins: [0, .1): 1 image, |0.05 - 0|; [.1, .2): 2 images, |0.15 - 0.5|; [.9, 1]: 2 images, |0.975 - 1|.
    expected = (1 * 0.05 + 2 * 0.35 + 2 * 0.025) / 5
    assert expected_calibration_error(targets, probabilities) == pytest.approx(expected)
    # J: flag >= .95 -> 2/3 - 0; >= .15 -> 1 - 1/2; best is between .95 and .15.
    assert youden_threshold(targets, probabilities) == pytest.approx(0.55)


def test_platt_undoes_a_shift():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=400)
    targets = rng.random(400) < 1 / (1 + np.exp(-logits))
    scale, bias = fit_platt(logits + 2.0, targets)  # a head that over-calls by 2 logits
    assert scale == pytest.approx(1.0, abs=0.3) and bias == pytest.approx(-2.0, abs=0.4)


def test_split_is_stratified_and_seeded():
    targets = np.zeros((50, 2), dtype=np.uint8)
    targets[:5, 0] = 1  # rare label
    targets[5:25, 1] = 1
    train, validation = split_indices(targets, 0.2, seed=3)
    assert len(np.intersect1d(train, validation)) == 0 and len(train) + len(validation) == 50
    assert targets[validation, 0].sum() == 1 and targets[validation, 1].sum() == 4
    again = split_indices(targets, 0.2, seed=3)
    assert np.array_equal(again[1], validation)
    assert not np.array_equal(split_indices(targets, 0.2, seed=4)[1], validation)


def test_too_few_examples_is_an_input_error(encoder, tmp_path):
    folder = write_film_folder(tmp_path / "few", positives=1, negatives=6, seed=0)
    with pytest.raises(InputError, match="'Lung nodule' has 1 positive"):
        train_head(encoder, load_data(str(folder)), config=TrainingConfig(epochs=1))
