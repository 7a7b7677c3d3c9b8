"""Model loading through the production loader: hf-hub from a cache, local-dir, download, errors."""

from __future__ import annotations

import json

import pytest
import torch

from meddx.dev.tiny import make_tiny_hub_cache
from meddx.errors import ModelError
from meddx.model.encoder import clear_cache, load_encoder
from meddx.model.geometry import PadToSquare
from meddx.model.spec import ModelSpec, download_model, resolve

TEXTS = ["chest x-ray showing a lung nodule", "chest x-ray showing no lung nodule"]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_spec_parsing():
    assert ModelSpec.parse("hf-hub:org/name@abc") == ModelSpec("hf-hub", "org/name", "abc")
    assert str(ModelSpec.parse("hf-hub:org/name")) == "hf-hub:org/name"
    assert ModelSpec.parse("local-dir:/x/y").location == "/x/y"
    for bad in ["", "org/name", "s3:bucket", "hf-hub:"]:
        with pytest.raises(ModelError, match="Unrecognised model spec"):
            ModelSpec.parse(bad)


def test_local_dir_loads_and_is_cached(tiny_model_dir):
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    assert load_encoder(f"local-dir:{tiny_model_dir}") is encoder
    assert encoder.revision == "unversioned local folder"
    emb = encoder.embed_texts(TEXTS)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_weights_are_the_checkpoint_and_buffers_are_real(tiny_model_dir, tmp_path):
    """Parameters are made empty and the checkpoint assigned: every tensor must hold the file's values.

    The text tower's parameters are not read at load (its directions are usually cached): its first forward
    reads them."""
    import shutil

    from safetensors.torch import load_file

    from meddx.model.stem import text_tower_resident

    saved = load_file(tiny_model_dir / "open_clip_model.safetensors")
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    assert all(p.is_meta for p in encoder.model.text.parameters()) and not text_tower_resident(encoder)
    assert not any(p.is_meta for p in encoder.model.visual.parameters())
    encoder.embed_texts(TEXTS)
    assert text_tower_resident(encoder)
    state = encoder.model.state_dict()
    assert state.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert not any(t.is_meta for t in [*encoder.model.parameters(), *encoder.model.buffers()])

    # BiomedCLIP ships a PyTorch .bin, written by an older transformers that saved the position ids.
    bin_dir = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, bin_dir)
    (bin_dir / "open_clip_model.safetensors").unlink()
    old = dict(saved, **{"text.transformer.embeddings.position_ids": torch.arange(128)[None]})
    torch.save(old, bin_dir / "open_clip_pytorch_model.bin")
    from_bin = load_encoder(f"local-dir:{bin_dir}")
    assert not text_tower_resident(from_bin)
    torch.testing.assert_close(from_bin.embed_texts(TEXTS), encoder.embed_texts(TEXTS), rtol=0, atol=0)
    pixels = torch.rand(1, 3, encoder.image_size, encoder.image_size)
    torch.testing.assert_close(from_bin.embed_images(pixels), encoder.embed_images(pixels), rtol=0, atol=0)


def test_a_checkpoint_without_the_text_tower_is_refused_at_load(tiny_model_dir, tmp_path):
    """The text tower is read later, but whether the file holds it is checked when the model is loaded."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "no-text"
    shutil.copytree(tiny_model_dir, broken)
    saved = load_file(broken / "open_clip_model.safetensors")
    save_file(
        {k: v for k, v in saved.items() if k != "text.proj.0.weight"}, broken / "open_clip_model.safetensors"
    )
    with pytest.raises(ModelError, match=r"could not be built.*text\.proj\.0\.weight"):
        load_encoder(f"local-dir:{broken}")


def test_hf_hub_from_offline_cache_matches_local_dir(tiny_model_dir, isolated_hf_cache):
    spec = make_tiny_hub_cache(isolated_hf_cache, model_folder=tiny_model_dir)
    hub = load_encoder(spec)
    local = load_encoder(f"local-dir:{tiny_model_dir}")
    assert len(hub.revision) == 40 and hub.resolved.text_revision
    torch.testing.assert_close(hub.embed_texts(TEXTS), local.embed_texts(TEXTS))
    pixels = torch.rand(1, 3, hub.image_size, hub.image_size)
    with torch.no_grad():
        torch.testing.assert_close(hub.embed_images(pixels), local.embed_images(pixels))


def test_hf_hub_revision_pin(tiny_model_dir, isolated_hf_cache):
    spec = make_tiny_hub_cache(isolated_hf_cache, model_folder=tiny_model_dir)
    revision = resolve(spec).revision
    assert resolve(f"{spec}@{revision}").revision == revision


def test_missing_hub_model_says_how_to_fix(isolated_hf_cache):
    with pytest.raises(ModelError) as info:
        load_encoder("hf-hub:nobody/not-cached")
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert "python -m meddx download" in message and "local-dir:" in message


def test_missing_folder_and_weights(tmp_path, tiny_model_dir):
    with pytest.raises(ModelError, match="does not exist"):
        load_encoder(f"local-dir:{tmp_path / 'nope'}")
    with pytest.raises(ModelError, match=r"no open_clip_config\.json"):
        load_encoder(f"local-dir:{tmp_path}")
    broken = tmp_path / "noweights"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text((tiny_model_dir / "open_clip_config.json").read_text())
    (broken / "text_tower").symlink_to(tiny_model_dir / "text_tower")
    with pytest.raises(ModelError, match="no weights"):
        load_encoder(f"local-dir:{broken}")


def test_corrupt_weights_and_config(tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "open_clip_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="could not be built"):
        load_encoder(f"local-dir:{folder}")
    (folder / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid open_clip config"):
        load_encoder(f"local-dir:{folder}")


def test_download_round_trip_is_self_contained(tiny_model_dir, isolated_hf_cache, tmp_path):
    spec = make_tiny_hub_cache(isolated_hf_cache, model_folder=tiny_model_dir)
    out = download_model(spec, tmp_path / "bundle")
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == "text_tower"
    assert (out / "text_tower" / "vocab.txt").is_file()
    source = json.loads((out / "meddx_source.json").read_text())
    assert source["model"] == spec and len(source["revision"]) == 40
    # The bundle must not need the cache any more.
    shutil_rmtree(isolated_hf_cache)
    bundle = load_encoder(f"local-dir:{out}")
    assert bundle.revision == source["revision"]
    torch.testing.assert_close(
        bundle.embed_texts(TEXTS), load_encoder(f"local-dir:{tiny_model_dir}").embed_texts(TEXTS)
    )


def shutil_rmtree(path):
    import shutil

    shutil.rmtree(path)
    path.mkdir()


def test_token_trimming_gives_the_same_embeddings(tiny_model_dir):
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    trimmed = encoder.tokenize(TEXTS)
    full, _ = encoder.tokenizer(TEXTS)
    assert trimmed.shape[1] < full.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.model.encode_text(trimmed, normalize=True),
            encoder.model.encode_text(full, normalize=True),
        )


def test_pad_to_square_keeps_the_whole_image():
    from PIL import Image

    image = Image.new("L", (100, 50), 255)
    square, geometry = PadToSquare(20)(image)
    assert square.size == (20, 20)
    assert (geometry.pad_left, geometry.pad_top, geometry.side) == (0, 25, 100)
    import numpy as np

    arr = np.asarray(square)
    assert arr[10, :].min() > 200  # the whole width is kept (no crop)
    assert arr[0, :].max() < 50  # padding above


def test_the_tiny_tokenizer_knows_every_prompt_word(tiny_model_dir):
    """The tiny models' word list is fixed (their random draws depend on its size); it must hold every word
    a zero-shot prompt uses, or prompts would silently tokenize to [UNK]. Adding a word changes the tiny
    models: re-measure the attribution floors (tests/test_attribution.py) when you do."""
    from meddx.dev.tiny import prompt_words

    vocab = set((tiny_model_dir / "text_tower" / "vocab.txt").read_text(encoding="utf-8").split())
    assert prompt_words() <= vocab, sorted(prompt_words() - vocab)


def test_offline_download_does_not_tell_the_user_to_run_itself(isolated_hf_cache, tmp_path, capsys):
    from meddx.cli.main import main

    code = main(["download", "--to", str(tmp_path / "copy"), "--model", "hf-hub:nobody/not-cached"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1
    assert "cannot be reached from here" in err and "Run this same command on a machine with internet" in err
    assert "run `python -m meddx download" not in err
