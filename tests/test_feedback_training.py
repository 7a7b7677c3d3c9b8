"""Training on feedback (with labelled films), promotion only when better, and the simulated loop.

Everything runs on the untrained tiny model and synthetic films (`meddx.dev.feedback_loop`): a third of
the films carry a planted bright blob, and the simulated clinician says "present" exactly for those.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.cli.train import run_promote, run_train
from meddx.dev.feedback_loop import format_rows, give_feedback, run_loop, write_films
from meddx.dev.tiny import write_to_hf_cache
from meddx.model.encoder import load_encoder
from meddx.model.head import encoder_identity
from meddx.model.head_store import HEAD_FILES, load_head, read_head
from meddx.train.feedback import FeedbackRecord, FeedbackWriter
from tests.helpers import FakeHubApi


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("feedback-films")
    return {
        "labelled": write_films(root / "labelled", positives=8, negatives=16, seed=1),
        "held_out": write_films(root / "held_out", positives=20, negatives=40, seed=100),
        "cache": root / "embeddings",
    }


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return load_encoder(f"local-dir:{tiny_model_dir}")


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory, encoder) -> Path:
    folder = tmp_path_factory.mktemp("feedback")
    give_feedback(encoder, None, folder / "a", films=48, seed=7)
    # Answers the trainer must handle: "not sure" (no label), and a finding with too few answers.
    writer = FeedbackWriter(folder / "b")
    embedding = [0.0] * (encoder_identity(encoder).embed_dim - 1) + [1.0]
    model = encoder_identity(encoder).to_dict()
    for labels, missed in [({"nodule": "not sure"}, ["effusion"]), ({"effusion": "absent"}, [])]:
        scores = {"nodule": {"zero_shot": 0.5, "fine_tuned": None}}
        writer.write(
            FeedbackRecord.create(
                model=model,
                embedding=embedding,
                scores=scores,
                labels=labels,
                missed=missed,
                scoring_mode="zero-shot",
            )
        )
    return folder


def _common(tiny_model_dir, films) -> list[str]:
    return ["--model", f"local-dir:{tiny_model_dir}", "--cache-dir", str(films["cache"])]


def test_train_combines_labelled_films_and_feedback(films, feedback_dir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "head"
    args = ["--data", str(films["labelled"]), "--data", f"feedback:{feedback_dir}", "--out", str(out)]
    assert run_train([*args, *_common(tiny_model_dir, films)]) == 0
    printed = capsys.readouterr().out
    assert "Left out effusion: only feedback labels it" in printed
    assert "Feedback: 50 records" in printed
    meta = json.loads((out / "head.json").read_text())
    assert meta["finding_ids"] == ["nodule"]
    # 24 labelled films + 48 feedback films with a nodule answer (the "not sure" one is no label).
    assert meta["data"]["counts"] == {"nodule": {"positive": 8 + 16, "negative": 16 + 32}}
    assert meta["data"]["images"] == 24 + 50
    assert meta["data"]["feedback"] == {
        "records": 50,
        "sources": ["feedback folder"],
        "counts": {
            "effusion": {"present": 0, "absent": 1, "not sure": 0, "missed": 1},
            "nodule": {"present": 16, "absent": 32, "not sure": 1, "missed": 0},
        },
    }
    assert str(feedback_dir) not in json.dumps(meta)  # no local path is stored
    card = (out / "README.md").read_text()
    assert "Clinician feedback: 50 records (feedback folder)" in card
    assert "| nodule | 16 | 32 | 1 | 0 |" in card

    only = tmp_path / "feedback-only"
    assert (
        run_train(["--data", f"feedback:{feedback_dir}", "--out", str(only), *_common(tiny_model_dir, films)])
        == 0
    )
    assert read_head(only).metadata["data"]["description"] == "feedback folder (50 records)"


def test_feedback_from_another_model_revision_is_refused(
    films, tmp_path, tiny_model_dir, other_model_dir, capsys
):
    other = load_encoder(f"local-dir:{other_model_dir}")
    give_feedback(other, None, tmp_path / "fb", films=6, seed=3)
    args = [
        "--data",
        str(films["labelled"]),
        "--data",
        f"feedback:{tmp_path / 'fb'}",
        "--out",
        str(tmp_path / "h"),
    ]
    assert run_train([*args, *_common(tiny_model_dir, films)]) == 2
    err = capsys.readouterr().err
    assert "6 of 6 records in the feedback folder were scored by another model or revision" in err
    assert "not comparable" in err and err.count("\n") == 1


def test_promote_refuses_a_head_that_is_not_better_and_records_why(films, tiny_model_dir, tmp_path, capsys):
    common = _common(tiny_model_dir, films)
    assert run_train(["--data", str(films["labelled"]), "--out", str(tmp_path / "current"), *common]) == 0
    assert run_train(["--data", str(films["labelled"]), "--out", str(tmp_path / "same"), *common]) == 0
    capsys.readouterr()
    decision = tmp_path / "decision.json"
    heads = ["--candidate", str(tmp_path / "same"), "--current", str(tmp_path / "current")]
    code = run_promote([*heads, "--data", str(films["held_out"]), *common, "--json", str(decision)])
    out = capsys.readouterr().out
    assert code == 1 and "Not promoted: The mean AUROC is not better" in out
    entry = json.loads(decision.read_text())
    nodule = entry["findings"]["nodule"]
    assert nodule["difference"] == {"auroc": 0.0, "ci": [0.0, 0.0]}
    low, high = nodule["current"]["ci"]
    assert low < nodule["current"]["auroc"] < high and 0 <= nodule["current"]["ece"] <= 1
    history = read_head(tmp_path / "same").metadata["history"]
    assert [h["decision"] for h in history] == ["refused"] and history[0]["mean_auroc"] == entry["mean_auroc"]
    assert "**" in (tmp_path / "same" / "README.md").read_text().split("## Promotion history")[1]
    assert "history" not in read_head(tmp_path / "current").metadata  # the served head is untouched

    from sklearn.metrics import roc_auc_score

    held = load_head(f"local-dir:{tmp_path / 'current'}")
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache, embed_sources

    data = load_data(str(films["held_out"]))
    x = embed_sources(
        load_encoder(f"local-dir:{tiny_model_dir}"), data.sources, cache=EmbeddingCache(films["cache"])
    )
    expected = roc_auc_score(data.targets[:, 0], held.probabilities(x)[:, 0].numpy())
    assert nodule["current"]["auroc"] == pytest.approx(expected, abs=1e-4)


def test_promote_pushes_to_the_current_heads_hub_repo(
    films, feedback_dir, tiny_model_dir, tmp_path, isolated_hf_cache, monkeypatch, capsys
):
    import huggingface_hub

    common = _common(tiny_model_dir, films)
    weak = ["--epochs", "1"]  # a current head little better than zero-shot, so that the candidate wins
    assert (
        run_train(["--data", str(films["labelled"]), "--out", str(tmp_path / "current"), *weak, *common]) == 0
    )
    write_to_hf_cache(tmp_path / "current", "me/nodule-head", isolated_hf_cache)
    args = ["--data", str(films["labelled"]), "--data", f"feedback:{feedback_dir}"]
    assert run_train([*args, "--out", str(tmp_path / "candidate"), *common]) == 0
    api = FakeHubApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    heads = ["--candidate", str(tmp_path / "candidate"), "--current", "hf-hub:me/nodule-head"]
    code = run_promote([*heads, "--data", str(films["held_out"]), *common])
    out = capsys.readouterr().out
    entry = read_head(tmp_path / "candidate").metadata["history"][-1]
    assert entry["decision"] == "promoted" and code == 0 and "Promoted" in out
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[1][1]["repo_id"] == "me/nodule-head" and api.uploaded == sorted(HEAD_FILES)
    assert entry["current"].startswith("hf-hub:me/nodule-head")


@pytest.mark.slow
def test_simulated_feedback_loop_raises_held_out_auroc_and_wrong_feedback_is_refused(
    tmp_path, tiny_model_dir
):
    rows = run_loop(tmp_path, model_spec=f"local-dir:{tiny_model_dir}")
    print("\n" + format_rows(rows))
    correct, wrong = rows[:-1], rows[-1]
    start = correct[0]["current"]["auroc"]
    promoted = [r for r in correct if r["decision"] == "promoted"]
    assert promoted, "no round of correct feedback was promoted"
    assert all(r["exit_status"] == 0 for r in promoted)
    final = promoted[-1]["candidate"]["auroc"]
    assert final >= start + 0.08  # 0.676 -> 0.804 here
    assert all(r["candidate"]["auroc"] > r["current"]["auroc"] for r in promoted)
    # Wrong answers: refused, the nodule worse beyond its interval, and the served head stays.
    assert wrong["wrong"] and wrong["decision"] == "refused" and wrong["exit_status"] == 1
    assert wrong["difference"]["ci"][1] < 0
    assert any("worse beyond its interval" in reason for reason in wrong["reasons"])
    assert wrong["current"]["auroc"] == pytest.approx(final)
    served = read_head(tmp_path / "current").metadata
    assert [h["decision"] for h in served["history"]] == ["promoted"] * len(promoted)
    assert np.isclose(served["history"][-1]["mean_auroc"]["candidate"], final)


def test_unlabelled_entries_weigh_nothing(films, encoder):
    """A full mask trains exactly as before; what a mask hides can say anything without changing the head."""
    import torch

    from meddx.model.zero_shot import text_directions
    from meddx.train.datasets import load_data
    from meddx.train.embedding_cache import EmbeddingCache, embed_sources
    from meddx.train.fit import TrainingConfig, fit_head
    from meddx.train.training_set import TrainingSet

    data = load_data(str(films["labelled"]))
    x = embed_sources(encoder, data.sources, cache=EmbeddingCache(films["cache"]))
    directions = text_directions(encoder, list(data.findings))
    config, identity = TrainingConfig(epochs=30), encoder_identity(encoder)
    plain = fit_head(x, data, directions, identity=identity, config=config)
    full = TrainingSet("test", data.findings, data.targets, np.ones(data.targets.shape, bool))
    assert torch.equal(
        fit_head(x, full, directions, identity=identity, config=config).linear.weight, plain.linear.weight
    )

    extra = torch.randn(6, x.shape[1])
    extra = extra / extra.norm(dim=1, keepdim=True)
    mask = np.r_[np.ones(data.targets.shape, bool), np.zeros((6, 1), bool)]
    heads = [
        fit_head(
            torch.cat([x, extra]),
            TrainingSet("test", data.findings, np.r_[data.targets, np.full((6, 1), value, np.uint8)], mask),
            directions,
            identity=identity,
            config=config,
        )
        for value in (0, 1)
    ]
    assert torch.equal(heads[0].linear.weight, heads[1].linear.weight)
    assert heads[0].metadata["data"]["counts"] == {"nodule": {"positive": 8, "negative": 16}}
