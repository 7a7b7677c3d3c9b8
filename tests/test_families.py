"""Every model family through the production loader: found from its files, its tokenizer, scoring rule and
image tower (`meddx.model.vision.VisionTower`), the runtime stem, download, gated repos, and the whole
analysis (zero-shot, maps, regions, CLI) on a tiny random model of each."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from meddx.dev.tiny import make_tiny_hub_cache, synthetic_film
from meddx.errors import ModelError
from meddx.model.encoder import clear_cache, load_encoder
from meddx.model.spec import ModelSpec, detect_family, download_model, resolve
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import text_directions
from tests.conftest import OTHER_FAMILIES

FAMILIES = ("open_clip_hf", *OTHER_FAMILIES)
TEXTS = ["chest x-ray showing a lung nodule", "normal chest x-ray"]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _encoder(family_model_dirs, family):
    return load_encoder(f"local-dir:{family_model_dirs[family]}")


def _film() -> Image.Image:
    return Image.fromarray(synthetic_film(np.random.default_rng(0), size=200, blob=True).pixels).convert(
        "RGB"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_found_from_the_files(family_model_dirs, family):
    folder = family_model_dirs[family]
    assert detect_family(folder, ModelSpec("local-dir", str(folder))) == family
    encoder = _encoder(family_model_dirs, family)
    assert encoder.family == family
    assert encoder.scoring == ("sigmoid" if family == "siglip" else "softmax")


def test_a_transformers_model_of_another_type_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="transformers 'bert' model; meddx hosts image-text models"):
        resolve(f"local-dir:{tmp_path}")


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_tokenizers_read_the_family_files(family_model_dirs, family):
    """Each tokenizer really reads the vocabulary written for it (transformers 5 silently ignores some
    constructor arguments): the prompts' words come back from the ids, and SigLIP pads to 64 untrimmed."""
    encoder = _encoder(family_model_dirs, family)
    ids, lengths = encoder.tokenizer(TEXTS)
    assert (lengths > 3).all()
    if family == "siglip":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(family_model_dirs[family])
        assert ids.shape[1] == 64 and encoder.tokenize(TEXTS).shape[1] == 64
        # SigLIP's tokenizer canonicalises text as in training: lower case, punctuation removed
        assert tokenizer.decode(ids[0], skip_special_tokens=True) == TEXTS[0].replace("-", "")
        assert tokenizer.unk_token_id not in ids[0].tolist()
    elif family == "clip":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(family_model_dirs[family])
        assert tokenizer.decode(ids[0], skip_special_tokens=True).strip().replace(" - ", "-") == TEXTS[0]
        assert encoder.tokenize(TEXTS).shape[1] == int(lengths.max()) < ids.shape[1]
    else:
        from open_clip.tokenizer import SimpleTokenizer

        words = SimpleTokenizer().decode(ids[0][1 : int(lengths[0]) - 1].tolist()).strip()
        assert words.replace(" - ", "-") == TEXTS[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tower_protocol(family_model_dirs, family):
    """embed / block / block_with_attention / pool give the family's own image embedding (to 1e-5), and the
    attention probabilities are in the graph."""
    encoder = _encoder(family_model_dirs, family)
    tower = encoder.tower
    pixels = torch.stack([encoder.preprocess(_film())[0], encoder.preprocess(_film().rotate(90))[0]])
    tokens = tower.embed(pixels)
    assert tokens.shape[1] == tower.prefix + tower.grid**2
    assert tower.grid * tower.patch == encoder.image_size
    assert tower.prefix == (0 if family == "siglip" else 1)
    pooling = {"open_clip_hf": "mean", "siglip": "attention_pool"}  # the tiny timm tower averages
    assert tower.pooling == pooling.get(family, "class_token")
    x = tokens
    with torch.no_grad():
        for index in range(len(tower.blocks)):
            plain = tower.block(index, x)
            explicit, probabilities = tower.block_with_attention(index, x)
            torch.testing.assert_close(explicit, plain, atol=1e-5, rtol=1e-5)
            assert probabilities.shape[-2:] == (x.shape[1], x.shape[1])
            torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]))
            x = plain
        torch.testing.assert_close(tower.pool(x), encoder.visual(pixels), atol=1e-5, rtol=1e-5)
    pooled, probe = tower.pool_with_attention(x.clone().requires_grad_())
    if family == "siglip":
        assert probe.shape == (2, tower.blocks[0].self_attn.num_heads, 1, x.shape[1])
        assert torch.autograd.grad(pooled.sum(), probe, retain_graph=True)[0].abs().sum() > 0
        torch.testing.assert_close(pooled, tower.pool(x), atol=1e-5, rtol=1e-5)
    else:
        assert probe is None
    leaf = tokens.detach().requires_grad_()
    out, probabilities = tower.block_with_attention(len(tower.blocks) - 1, leaf)
    assert torch.autograd.grad(tower.pool(out).sum(), probabilities)[0].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_shot_follows_the_family_scoring_rule(family_model_dirs, family):
    from meddx.model.scored import score_image

    encoder = _encoder(family_model_dirs, family)
    findings = list(load_vocabulary().findings[:4])
    directions = text_directions(encoder, findings)
    scored = score_image(encoder, _film(), directions)
    x = scored.unit_embedding
    s = encoder.logit_scale
    if family == "siglip":  # SigLIP's own sigmoid: s * x.p + logit_bias
        expected = torch.sigmoid(s * x @ directions.positive.T + encoder.logit_bias)[0]
    else:  # the two-way softmax over [positive, negative]
        pair = torch.stack([x @ directions.positive.T, x @ directions.negative.T], dim=-1) * s
        expected = torch.softmax(pair, dim=-1)[0, :, 0]
    torch.testing.assert_close(scored.zero_shot, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the stem + tail split is the whole tower
        torch.testing.assert_close(x, encoder.embed_images(scored.pixels[None]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_films_scored_together_get_what_each_gets_alone(family_model_dirs, family):
    """`batch` actors push a call's films through the tower in one forward: same scores, embeddings and
    stem tokens as one film at a time, each with its own geometry (films of different shapes)."""
    from meddx.model.scored import score_image, score_images

    encoder = _encoder(family_model_dirs, family)
    directions = text_directions(encoder, list(load_vocabulary().findings[:5]))
    rng = np.random.default_rng(1)
    films = [
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).convert("RGB")
        for shape in ((200, 160), (120, 240), (150, 150))
    ]
    together = score_images(encoder, films, directions)
    for film, shared in zip(films, together, strict=True):
        alone = score_image(encoder, film, directions)
        assert shared.geometry == alone.geometry
        torch.testing.assert_close(shared.zero_shot, alone.zero_shot, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shared.unit_embedding, alone.unit_embedding, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shared.tokens, alone.tokens, atol=1e-4, rtol=1e-4)
        assert shared.tail is not alone.tail and shared.tokens.shape == alone.tokens.shape


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_text_tower_is_read_at_its_first_forward(family_model_dirs, family):
    from meddx.model.stem import text_tower_resident

    encoder = _encoder(family_model_dirs, family)
    assert not text_tower_resident(encoder)
    first = encoder.embed_texts(TEXTS)
    assert text_tower_resident(encoder)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(2))
    clear_cache()  # a model built with every weight read at once gives the same embeddings
    from meddx.model.weights import restore

    again = _encoder(family_model_dirs, family)
    restore(again.text_owner)
    torch.testing.assert_close(again.embed_texts(TEXTS), first)


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_runtime_stem_for_every_family(family_model_dirs, family, tmp_path, caplog):
    """The ONNX fp32 stem matches PyTorch's tokens; int8 is served only where its gate passes (else one line);
    the PyTorch stem's weights are released and read back for a whole-tower method."""
    from meddx.model.stem import load_runtime_stem, restore_torch_stem, torch_stem_resident
    from meddx.model.tower import stem

    encoder = _encoder(family_model_dirs, family)
    directions = text_directions(encoder, list(load_vocabulary().findings))
    pixels = encoder.preprocess(_film())[0][None]
    with torch.no_grad():
        reference = stem(encoder, pixels)
    fp32 = load_runtime_stem(encoder, "fp32", tmp_path, directions=directions, release=False)
    assert fp32 is not None and fp32.kind == "fp32"
    torch.testing.assert_close(fp32(pixels), reference, atol=1e-4, rtol=1e-4)
    with caplog.at_level(logging.WARNING, logger="meddx.model.stem"):
        int8 = load_runtime_stem(encoder, "int8", tmp_path, directions=directions)
    assert int8.kind == "int8" or "int8 refused by the agreement gate" in caplog.text
    assert not torch_stem_resident(encoder)
    restore_torch_stem(encoder)
    with torch.no_grad():
        torch.testing.assert_close(stem(encoder, pixels), reference)


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_hub_cache_and_download_bundle(family_model_dirs, family, tmp_path, isolated_hf_cache):
    spec = make_tiny_hub_cache(
        isolated_hf_cache,
        repo_id=f"meddx-test/tiny-{family}",
        model_folder=family_model_dirs[family],
        family=family,
    )
    hub = load_encoder(spec)
    assert hub.family == family and len(hub.revision) == 40
    bundle = download_model(spec, tmp_path / "bundle")
    assert not (bundle / "text_tower").exists()  # the text tower is in the repo itself
    source = json.loads((bundle / "meddx_source.json").read_text())
    assert source["family"] == family and source["revision"] == hub.revision
    local = load_encoder(f"local-dir:{bundle}")
    assert local.revision == hub.revision
    torch.testing.assert_close(local.embed_texts(TEXTS), hub.embed_texts(TEXTS))


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub does for a gated repo: 401 without a token, 403 with one."""

    def _refuse(self) -> None:
        status = 403 if self.headers.get("authorization") else 401
        body = b'{"error": "Access to model google/medsiglip-448 is restricted."}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model google/medsiglip-448 is restricted.")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("token", [None, "hf_not_accepted"])
def test_gated_repo_without_accepted_terms_gets_one_line(monkeypatch, token):
    """A fake Hub answering 401 (no token) and 403 (a token whose account has not accepted the terms)."""
    import huggingface_hub.constants as hf_constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    if token:
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", "/nonexistent")
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", "/nonexistent")
    try:
        with pytest.raises(ModelError) as error:
            resolve("hf-hub:google/medsiglip-448")
    finally:
        server.shutdown()
    message = str(error.value)
    assert "\n" not in message
    assert "google/medsiglip-448 is a gated model" in message
    assert "accept its terms on https://huggingface.co/google/medsiglip-448" in message
    assert "HF_TOKEN" in message


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_analysis_with_maps_and_regions(family_model_dirs, family, tmp_path):
    """The whole analysis on each family: scores, default Grad-CAM maps on the film, regions, model named."""
    from meddx.config import Settings
    from meddx.pipeline import analyze
    from tests.helpers import write_dicom

    settings = Settings(model=f"local-dir:{family_model_dirs[family]}", threads=1)
    analysis = analyze(write_dicom(tmp_path / "film.dcm"), settings=settings, top_k=2, include_maps=True)
    assert len(analysis.findings) == 15
    assert all(0.0 <= f.probability <= 1.0 for f in analysis.findings)
    mapped = analysis.explanation.mapped
    assert len(mapped) == 2
    for finding_id in mapped:
        on_film = analysis.maps[finding_id].on_film()
        assert on_film.shape == analysis.preview.shape and on_film.max() > 0
    data = analysis.to_dict()
    assert data["model"]["spec"] == settings.model
    assert any(f["regions"] for f in data["findings"] if f["id"] in mapped)


@pytest.mark.slow
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_cli_analyze(family_model_dirs, family, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import write_dicom

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, MEDDX_MODEL=f"local-dir:{family_model_dirs[family]}", PYTHONPATH=str(root))
    film = write_dicom(tmp_path / "film.dcm")
    result = subprocess.run(
        [sys.executable, "-m", "meddx", "analyze", str(film), "--json", "--top-k", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["findings"]) == 15 and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_live_app_through_gradio_client(family_model_dirs, family, tmp_path):
    from gradio_client import handle_file

    from meddx.config import Settings
    from tests.helpers import api_client, running_app, write_png

    settings = Settings(model=f"local-dir:{family_model_dirs[family]}", threads=1)
    (tmp_path / "gradio").mkdir()
    with running_app(settings, tmp_path / "gradio") as url:
        data, markdown = api_client(url).predict(
            handle_file(write_png(tmp_path / "film.png")), "No pneumothorax.", api_name="/analyze"
        )
    assert len(data["findings"]) == 15 and data["model"]["spec"] == settings.model
    assert markdown


def test_model_card_reads_licence_and_gating_from_the_repo(family_model_dirs, tmp_path):
    import shutil

    from meddx.model.card import licence_of, model_card

    folder = tmp_path / "siglip"
    shutil.copytree(family_model_dirs["siglip"], folder)
    assert licence_of(folder) == ("unknown", "unknown")  # no card: nothing claimed
    (folder / "README.md").write_text(
        "---\nlicense: other\nlicense_name: health-ai-developer-foundations\n"
        "extra_gated_heading: Access MedSigLIP on Hugging Face\n---\n# MedSigLIP\n"
    )
    assert licence_of(folder) == ("other", True)
    encoder = load_encoder(f"local-dir:{folder}")
    card = model_card(encoder, calibrated=False)
    assert card.family == "transformers SigLIP" and card.input_size == encoder.image_size
    assert "licence other, gated" in card.line() and "uncalibrated" in card.line()


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_calibration_is_tied_to_its_model(family_model_dirs, family, tmp_path):
    """A calibration measured on one family's model serves it (scores marked calibrated on the card) and is
    refused for another model in one message."""
    from dataclasses import replace

    from meddx.config import Settings
    from meddx.pipeline import analyze, load_calibration_for
    from tests.helpers import write_calibration, write_png

    calibration = write_calibration(tmp_path / "cal", family_model_dirs[family], {"nodule": 0.5})
    own = Settings(model=f"local-dir:{family_model_dirs[family]}", threads=1, calibration=str(calibration))
    analysis = analyze(write_png(tmp_path / "film.png"), settings=own, top_k=0)
    assert analysis.model.card.calibrated and analysis.flagging.calibrated
    other = replace(own, model=f"local-dir:{family_model_dirs['open_clip_hf']}")
    with pytest.raises(
        ModelError, match="Calibrated probabilities and thresholds hold only for the exact model"
    ):
        load_calibration_for(other, load_encoder(other.model))


def test_a_sharded_checkpoint_loads_with_every_weight_resident(family_model_dirs, tmp_path):
    """A checkpoint in shards goes through transformers' own loader: same model, nothing released."""
    from transformers import AutoModel

    from meddx.model.stem import release_text_tower, text_tower_resident

    folder = tmp_path / "sharded"
    AutoModel.from_pretrained(family_model_dirs["clip"]).save_pretrained(folder, max_shard_size="100KB")
    for name in (
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        (folder / name).write_bytes((family_model_dirs["clip"] / name).read_bytes())
    assert (folder / "model.safetensors.index.json").is_file()
    encoder = load_encoder(f"local-dir:{folder}")
    assert encoder.checkpoint is None and text_tower_resident(encoder)
    release_text_tower(encoder)  # no single file to read them back from: kept
    assert text_tower_resident(encoder)
    reference = load_encoder(f"local-dir:{family_model_dirs['clip']}")
    torch.testing.assert_close(encoder.embed_texts(TEXTS), reference.embed_texts(TEXTS))
