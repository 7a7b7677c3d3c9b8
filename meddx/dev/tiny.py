"""Small, seeded models and synthetic films for tests, benchmarks and offline UI work.

Everything here is written to disk in the same layouts production reads (an open_clip folder, or the
Hugging Face cache), and is loaded back through `meddx.model.encoder`, so tests exercise the real loader.

- `make_tiny_model`: a timm ``test_vit`` image tower and a 2-layer BERT text tower with a locally written
  WordPiece vocabulary (seconds to build, ~0.5 M parameters); ``size="biomedclip"`` builds BiomedCLIP's
  exact architecture (ViT-B/16 at 224 px, BiomedBERT-base text tower, 30,522-token vocabulary) with
  random weights, for benchmarks.
- `write_to_hf_cache`: lay a folder out as a cached Hub repo (blobs, snapshots, refs).
- `synthetic_film` and `train_planted_signal`: films with a planted bright blob, and a few seconds of
  contrastive training that teaches the tiny model to call the blob a lung nodule.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from meddx.model.spec import CONFIG_NAME, TEXT_TOWER_DIR

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_VOCAB_SIZE = 30522


@dataclass(frozen=True)
class Architecture:
    """The shape of a test model."""

    embed_dim: int
    timm_model_name: str
    image_size: int
    hidden_size: int
    layers: int
    heads: int
    intermediate: int
    context_length: int
    max_positions: int
    timm_pool: str = ""


ARCHITECTURES = {
    "tiny": Architecture(32, "test_vit", 96, 64, 2, 2, 128, 64, 128, timm_pool="avg"),
    # The same tiny tower pooling its class token, as BiomedCLIP's does (tests of that code path).
    "tiny-cls": Architecture(32, "test_vit", 96, 64, 2, 2, 128, 64, 128),
    "biomedclip": Architecture(512, "vit_base_patch16_224", 224, 768, 12, 12, 3072, 256, 512),
}


TINY_WORDS = Path(__file__).with_name("tiny_words.txt")


def _vocabulary_words() -> list[str]:
    """The tiny tokenizer's words: a fixed list (``tiny_words.txt``) holding every word of the prompts.

    Fixed, not derived from ``findings.yaml``: the vocabulary's size decides every random draw of a tiny
    model, so a new synonym for the notes reader would otherwise retrain different tiny models and move
    the numbers the attribution floors were measured on. `prompt_words` lists what a prompt needs; a test
    checks that the list holds them.
    """
    return TINY_WORDS.read_text(encoding="utf-8").split()


def prompt_words() -> set[str]:
    """Every word of the zero-shot prompts (templates, names, positive and negative phrases)."""
    from meddx.model.vocabulary import load_vocabulary

    raw = load_vocabulary().raw
    prompts = [{k: f.get(k) for k in ("name", "positive", "negative")} for f in raw["findings"]]
    return set(re.findall(r"[a-z]+", json.dumps([raw["templates"], raw["custom_label"], prompts]).lower()))


def _write_text_tower(folder: Path, arch: Architecture) -> None:
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + _vocabulary_words()
    if arch.hidden_size >= 768:  # a BiomedBERT-sized vocabulary
        vocab += [f"##{w}" for w in _vocabulary_words()]
        vocab += [f"[unused{i}]" for i in range(BERT_VOCAB_SIZE - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}),
        encoding="utf-8",
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "mask_token": "[MASK]",
            }
        ),
        encoding="utf-8",
    )
    BertConfig(
        vocab_size=len(vocab),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        intermediate_size=arch.intermediate,
        max_position_embeddings=arch.max_positions,
        pad_token_id=0,
    ).save_pretrained(folder)


def _open_clip_config(arch: Architecture, text_tower: str) -> dict:
    return {
        "model_cfg": {
            "embed_dim": arch.embed_dim,
            "vision_cfg": {
                "timm_model_name": arch.timm_model_name,
                "timm_model_pretrained": False,
                "timm_pool": arch.timm_pool,
                "timm_proj": "linear",
                "image_size": arch.image_size,
            },
            "text_cfg": {
                "hf_model_name": text_tower,
                "hf_tokenizer_name": text_tower,
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": arch.context_length,
            },
        },
        "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)},
    }


def save_weights(model: torch.nn.Module, folder: Path) -> Path:
    """Save an open_clip model's weights as ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = folder / "open_clip_model.safetensors"
    save_file(state, str(path))
    return path


FAMILY_NAMES = ("open_clip_hf", "open_clip", "siglip", "clip")
"""Families `make_tiny_model` can write (`meddx.model.families`)."""


def make_tiny_model(
    folder: str | Path, *, size: str = "tiny", seed: int = 0, family: str = "open_clip_hf"
) -> Path:
    """Write a seeded, randomly initialised model folder of ``family`` (loads with ``local-dir:FOLDER``).

    ``open_clip_hf`` (default: BiomedCLIP's layout) is written here; the other families by
    `meddx.dev.tiny_families`, each with its own config and tokenizer files.
    """
    import open_clip

    folder = Path(folder).expanduser().resolve()
    if family != "open_clip_hf":
        from meddx.dev.tiny_families import make_family_model

        return make_family_model(folder, family=family, size=size, seed=seed)
    if size not in ARCHITECTURES:
        raise ValueError(
            f"no {size!r} architecture for family {family!r}; choose one of {sorted(ARCHITECTURES)}"
        )
    arch = ARCHITECTURES[size]
    _write_text_tower(folder / TEXT_TOWER_DIR, arch)
    config = _open_clip_config(arch, str(folder / TEXT_TOWER_DIR))
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model(
        f"local-dir:{folder}",
        text_cfg=dict(config["model_cfg"]["text_cfg"], hf_model_pretrained=False),
        pretrained_text=False,
    )
    save_weights(model, folder)
    config["model_cfg"]["text_cfg"].update(hf_model_name=TEXT_TOWER_DIR, hf_tokenizer_name=TEXT_TOWER_DIR)
    config["meddx"] = {"random_weights": True}  # the page says its scores mean nothing
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def write_to_hf_cache(folder: str | Path, repo_id: str, cache_dir: str | Path) -> str:
    """Copy a folder into a Hugging Face hub cache as repo ``repo_id`` at ``main``; return the commit."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    commit = digest.hexdigest()
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for path in files:
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo_dir / "refs" / "main").write_text(commit, encoding="utf-8")
    return commit


def make_tiny_hub_cache(
    cache_dir: str | Path,
    *,
    repo_id: str = "meddx-test/tiny-clip",
    text_repo_id: str = "meddx-test/tiny-bert",
    model_folder: str | Path | None = None,
    seed: int = 0,
    family: str = "open_clip_hf",
) -> str:
    """Put a tiny model into a Hub cache: as two repos laid out like BiomedCLIP and its text tower, or, for
    the other families, as one repo holding everything.

    Returns the spec to load it with (``hf-hub:REPO``).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if family != "open_clip_hf":
            folder = (
                Path(model_folder)
                if model_folder
                else make_tiny_model(Path(tmp) / "m", seed=seed, family=family)
            )
            write_to_hf_cache(folder, repo_id, cache_dir)
            return f"hf-hub:{repo_id}"
        folder = Path(model_folder) if model_folder else make_tiny_model(Path(tmp) / "m", seed=seed)
        staging = Path(tmp) / "clip"
        staging.mkdir()
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        config["model_cfg"]["text_cfg"].update(hf_model_name=text_repo_id, hf_tokenizer_name=text_repo_id)
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
        for path in folder.glob("open_clip_model.*"):
            (staging / path.name).write_bytes(path.read_bytes())
        write_to_hf_cache(staging, repo_id, cache_dir)
        write_to_hf_cache(folder / TEXT_TOWER_DIR, text_repo_id, cache_dir)
    return f"hf-hub:{repo_id}"


# ---------------------------------------------------------------------------------------------------
# Synthetic films with a planted lesion


@dataclass(frozen=True)
class SyntheticFilm:
    """A synthetic grayscale film; ``box`` is the planted blob's bounding box (x0, y0, x1, y1) or None."""

    pixels: np.ndarray
    box: tuple[int, int, int, int] | None


def synthetic_film(
    rng: np.random.Generator, *, size: int = 256, blob: bool, radius: int | None = None
) -> SyntheticFilm:
    """A film-like background (two dark lung fields in a brighter body) with an optional bright blob."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.full((size, size), 0.55 + 0.05 * rng.standard_normal(), np.float32)
    for cx in (0.32, 0.68):
        lung = ((xx / size - cx) / 0.15) ** 2 + ((yy / size - 0.5) / 0.32) ** 2 < 1.0
        image[lung] = 0.2 + 0.05 * rng.standard_normal()
    image += 0.04 * rng.standard_normal((size, size)).astype(np.float32)
    box = None
    if blob:
        r = radius or int(size * rng.uniform(0.09, 0.13))
        cx = int(size * rng.choice([0.32, 0.68]) + rng.integers(-size // 12, size // 12 + 1))
        cy = int(size * rng.uniform(0.3, 0.7))
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 0.95
        box = (cx - r, cy - r, cx + r + 1, cy + r + 1)
    return SyntheticFilm((np.clip(image, 0, 1) * 255).astype(np.uint8), box)


PLANTED_FINDING = "nodule"


def train_planted_signal(folder: str | Path, *, steps: int = 120, seed: int = 0, batch: int = 32) -> dict:
    """Teach a tiny model that a bright blob is a lung nodule, by training on the nodule's prompts.

    Each film is scored against one random positive and one random negative prompt of the finding, as
    zero-shot scoring does, and the two-way cross-entropy is minimised (blob films: positive). The trained
    weights overwrite the folder's weights. Returns the final training loss.
    """
    from PIL import Image

    from meddx.model.encoder import build_encoder
    from meddx.model.spec import ModelSpec, resolve
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.weights import restore

    folder = Path(folder)
    encoder = build_encoder(resolve(ModelSpec("local-dir", str(folder))))
    restore(encoder.text_owner)  # read now (not at its first forward): the optimiser must hold these tensors
    positives, negatives = load_vocabulary().finding(PLANTED_FINDING).prompts()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = encoder.model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    loss_value = float("nan")
    for _ in range(steps):
        labels = rng.random(batch) < 0.5
        films = [synthetic_film(rng, size=encoder.image_size, blob=bool(label)) for label in labels]
        images = torch.stack([encoder.preprocess(Image.fromarray(f.pixels))[0] for f in films])
        prompts = [str(rng.choice(positives)) for _ in labels] + [str(rng.choice(negatives)) for _ in labels]
        text = torch.nn.functional.normalize(encoder.encode_text(encoder.tokenize(prompts)), dim=-1)
        text = text.view(2, batch, -1)
        image = encoder.embed_images(images)
        logits = model.logit_scale.exp() * torch.einsum("bd,kbd->bk", image, text)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(~labels, dtype=torch.long))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
    model.eval()
    save_weights(model, folder)
    return {"loss": loss_value, "steps": steps}
