"""Feedback records: exactly the allowed fields, one writer, the readers, the Hub upload (fake Hub API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meddx.config import Settings
from meddx.errors import InputError
from meddx.train.feedback import (
    FIELDS,
    FeedbackRecord,
    FeedbackWriter,
    check_record,
    load_feedback,
    open_feedback,
    read_feedback_folder,
)
from tests.helpers import FakeDatasetApi

MODEL = {
    "spec": "local-dir:/models/tiny",
    "model": "local-dir:/models/tiny",
    "revision": "sha256:ab",
    "embed_dim": 4,
}


def make_record(**overrides) -> FeedbackRecord:
    arguments = {
        "model": MODEL,
        "embedding": [0.5, -0.5, 0.5, -0.5],
        "scores": {"nodule": {"zero_shot": 0.4, "fine_tuned": 0.7}, "effusion": {"zero_shot": 0.1}},
        "labels": {"nodule": "present", "effusion": "not sure"},
        "missed": ["pneumothorax"],
        "scoring_mode": "both",
        **overrides,
    }
    return FeedbackRecord.create(**arguments)


def test_a_record_holds_exactly_the_allowed_fields(tmp_path):
    record = make_record()
    assert tuple(record.to_dict()) == FIELDS
    assert len(record.id) == 32 and len(record.date) == 10
    assert record.scores["effusion"] == {"zero_shot": 0.1, "fine_tuned": None}
    writer = FeedbackWriter(tmp_path / "fb")
    assert writer.write(record) == record.id
    lines = writer.path.read_text().splitlines()
    assert len(lines) == 1 and set(json.loads(lines[0])) == set(FIELDS)
    assert writer.path.name.startswith("feedback-") and writer.path.suffix == ".jsonl"


@pytest.mark.parametrize(
    "field, value",
    [
        ("notes", "58-year-old smoker"),
        ("file_name", "SMITH_JOHN.dcm"),
        ("pixels", [[0, 1], [2, 3]]),
        ("ip", "10.0.0.1"),
        ("session_hash", "abc"),
        ("PatientName", "SMITH^JOHN"),
    ],
)
def test_the_writer_refuses_any_other_field(tmp_path, field, value):
    writer = FeedbackWriter(tmp_path)
    data = make_record().to_dict() | {field: value}
    with pytest.raises(InputError, match=f"refused: {field}"):
        writer.write(data)
    assert not writer.path.exists() or writer.path.read_text() == ""


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": "patient-123"}, "random uuid4"),
        ({"date": "2026-12-04T10:31:00"}, "no time of day"),
        ({"labels": {"nodule": "probably"}}, "present, absent, not sure"),
        ({"labels": {"mr smith's mass": "present"}}, "free-text findings are never kept"),
        ({"missed": ["nodule", "nodule"]}, "named twice"),
        ({"labels": {"nodule": "absent"}, "missed": ["nodule"]}, "both absent and missed"),
        ({"labels": {}, "missed": []}, "Nothing to send"),
        ({"embedding": [0.1, 0.2]}, "4 finite numbers"),
        ({"embedding": [0.1, 0.2, float("nan"), 0.3]}, "4 finite numbers"),
        ({"scores": {"nodule": {"zero_shot": 2.0, "fine_tuned": None}}}, r"in \[0, 1\]"),
        ({"model": {**MODEL, "host": "x"}}, "exactly spec, model, revision, embed_dim"),
        ({"scoring_mode": "magic"}, "scoring_mode"),
    ],
)
def test_bad_values_are_refused(change, message):
    with pytest.raises(InputError, match=message):
        check_record(make_record().to_dict() | change)
    missing = make_record().to_dict()
    del missing["embedding"]
    with pytest.raises(InputError, match="needs embedding"):
        check_record(missing)


def test_reading_a_folder_checks_every_line(tmp_path):
    writer = FeedbackWriter(tmp_path / "fb")
    first, second = make_record(), make_record(labels={"nodule": "absent"}, missed=[])
    writer.write(first)
    writer.write(second)
    FeedbackWriter(tmp_path / "fb" / "other-replica").write(make_record())
    data = load_feedback(f"feedback:{tmp_path / 'fb'}")
    assert len(data) == 3 and data.description == "feedback folder"
    assert data.counts()["nodule"] == {"present": 2, "absent": 1, "not sure": 0, "missed": 0}
    assert data.counts()["pneumothorax"]["missed"] == 2

    with writer.path.open("a") as handle:
        handle.write(json.dumps(first.to_dict() | {"notes": "x"}) + "\n")
    with pytest.raises(InputError, match=r"line 3: not a valid feedback record .*refused: notes"):
        read_feedback_folder(tmp_path / "fb")
    with pytest.raises(InputError, match="does not exist"):
        load_feedback(f"feedback:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no records"):
        load_feedback(f"feedback:{tmp_path / 'empty'}")


def _dataset_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """A Hugging Face cache holding one dataset repo snapshot (as `snapshot_download` leaves it)."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        path = repo / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_the_scheduler_pushes_only_feedback_files_to_a_private_dataset(tmp_path, isolated_hf_cache):
    api = FakeDatasetApi()
    settings = Settings(feedback_dir=tmp_path / "fb", feedback_repo="me/meddx-feedback")
    writer = open_feedback(settings, api=api)
    try:
        writer.write(make_record())
        (tmp_path / "fb" / "stray.txt").write_text("not feedback")
        writer.scheduler.push_to_hub()
    finally:
        writer.close()
    (create, created), (commit, committed) = api.calls
    assert create == "create_repo" and created["repo_type"] == "dataset" and created["private"] is True
    assert commit == "create_commit" and committed["repo_id"] == "me/meddx-feedback"
    assert list(api.files) == [f"data/{writer.path.name}"]
    assert writer.lock is writer.scheduler.lock

    # What was pushed trains again: hf-dataset:owner/name from the (offline) cache.
    _dataset_cache(isolated_hf_cache, "me/meddx-feedback", api.files)
    data = load_feedback("hf-dataset:me/meddx-feedback")
    assert len(data) == 1 and data.description == "feedback dataset me/meddx-feedback"
    with pytest.raises(InputError, match="not in the Hugging Face cache"):
        load_feedback("hf-dataset:me/other")


def test_feedback_is_off_unless_a_folder_is_set(monkeypatch, tmp_path):
    assert open_feedback(Settings()) is None
    monkeypatch.setenv("MEDDX_FEEDBACK_REPO", "me/fb")
    with pytest.raises(ValueError, match="needs MEDDX_FEEDBACK_DIR"):
        Settings.from_env()
    monkeypatch.setenv("MEDDX_FEEDBACK_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert settings.feedback_dir == tmp_path and settings.feedback_repo == "me/fb"
