"""The data files load through one checked loader (`meddx.data`); a bad value names its file and key."""

from __future__ import annotations

import pytest

from meddx import data
from meddx.errors import DataFileError


def test_the_shipped_vocabulary_loads_and_is_consistent():
    from meddx.model.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    assert len(vocabulary.findings) == 15 and vocabulary.finding("no_finding")
    assert all(0.0 <= f.threshold <= 1.0 and f.positive and f.negative for f in vocabulary.findings)


def test_a_bad_value_names_the_file_and_the_key():
    findings = data.DataFile(
        {"findings": [{"id": "a", "threshold": 0.5}, {"id": "b", "threshold": "high"}]}, "f.yaml"
    )
    items = list(findings["findings"].items())
    assert items[0]["threshold"].number(low=0, high=1) == 0.5
    with pytest.raises(
        DataFileError, match=r"^f\.yaml: findings\[1\]\.threshold: expected a number in \[0, 1\], got 'high'$"
    ):
        items[1]["threshold"].number(low=0, high=1)
    with pytest.raises(DataFileError, match=r"^f\.yaml: findings\[0\]: missing key 'name'$"):
        items[0]["name"]
    with pytest.raises(DataFileError, match=r"^f\.yaml: findings\[0\]\.id: expected a list, got 'a'$"):
        items[0]["id"].texts()


def test_a_broken_vocabulary_stops_with_the_key(monkeypatch):
    from meddx.model import vocabulary

    broken = {"templates": {"positive": ["{}"], "negative": ["{}"]}, "findings": [{"id": "x", "name": "X"}]}
    monkeypatch.setattr(vocabulary, "load", lambda name: data.DataFile(broken, name))
    vocabulary.load_vocabulary.cache_clear()
    try:
        with pytest.raises(DataFileError, match=r"findings\.yaml: findings\[0\]: missing key 'positive'"):
            vocabulary.load_vocabulary()
    finally:
        vocabulary.load_vocabulary.cache_clear()
