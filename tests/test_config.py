"""`Settings` is the one reader of ``MEDDX_*``; what it reads reaches every part that needs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from meddx.config import Settings


def test_cache_dir_reaches_both_caches(tmp_path, tiny_model_dir, monkeypatch):
    from meddx.model.encoder import clear_cache
    from meddx.pipeline import analyze

    monkeypatch.setenv("MEDDX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDDX_MODEL", f"local-dir:{tiny_model_dir}")
    settings = Settings.from_env()
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.embedding_cache_dir == tmp_path / "cache" / "embeddings"
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "film.png")
    clear_cache()  # a fresh encoder: its text directions are computed, then stored
    analyze(tmp_path / "film.png", settings=settings, top_k=0)
    assert list((tmp_path / "cache" / "text-directions").glob("*.safetensors"))
    clear_cache()


def test_unset_variables_keep_the_defaults_and_bad_numbers_name_the_variable(monkeypatch):
    for name in ("MEDDX_MODEL", "MEDDX_CACHE_DIR", "MEDDX_MAX_FILE_MB", "MEDDX_TOP_K_MAPS"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env() == Settings()
    monkeypatch.setenv("MEDDX_MAX_FILE_MB", "lots")
    with pytest.raises(ValueError, match="MEDDX_MAX_FILE_MB must be an integer"):
        Settings.from_env()


def test_meddx_notes_honours_max_note_chars(monkeypatch, capsys):
    from meddx.cli import main

    monkeypatch.setenv("MEDDX_MAX_NOTE_CHARS", "10")
    assert main(["notes", "no pleural effusion today"]) == 2
    assert "too long" in capsys.readouterr().err
    assert main(["notes", "--max-chars", "100", "no pleural effusion today"]) == 0  # the option still wins


def test_dev_commands_say_they_need_a_source_checkout(monkeypatch, capsys):
    from meddx.cli import main

    monkeypatch.setitem(sys.modules, "meddx.dev.bench", None)  # as in an installed wheel: no meddx.dev
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "development tool" in err and "source checkout" in err and "Traceback" not in err
