"""Seeded random models of the families other than open_clip + Hugging Face text tower, in Hub layout, with
each family's real config and real tokenizer files, written offline (`meddx.dev.tiny.make_tiny_model` calls
these for ``family=``):

- ``open_clip``: an ``open_clip_config.json`` with open_clip's own vision and text transformers; the
  tokenizer is open_clip's bundled BPE (``SimpleTokenizer``), exactly what such a repo uses.
- ``siglip``: ``SiglipConfig`` + ``model.safetensors`` (``save_pretrained``), a sentencepiece unigram
  ``spiece.model`` trained here on the prompts' words (SigLIP's tokenizer format), and a
  ``SiglipImageProcessor`` config (mean = std = 0.5).
- ``clip``: ``CLIPConfig`` + ``model.safetensors``, a CLIP BPE ``vocab.json``/``merges.txt`` written from
  the first merges of open_clip's bundled CLIP vocabulary, and a ``CLIPImageProcessor`` config.

Sizes: ``tiny`` (seconds to build), or the real architectures with random weights for benchmarks:
``medsiglip`` (SigLIP-400M at 448: 27 layers, hidden 1152, 16 heads, MLP 4304, patch 14; text 64 positions,
vocabulary 32,000) and ``whyxrayclip`` (open_clip ViT-L/14 at 224 with its own 12-layer text transformer).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from meddx.model.spec import CONFIG_NAME


@dataclass(frozen=True)
class Shape:
    """The size of one tower."""

    hidden: int
    layers: int
    heads: int
    mlp: int


@dataclass(frozen=True)
class FamilyArchitecture:
    """A test model's shape for the open_clip-native and transformers families."""

    embed_dim: int
    image_size: int
    patch: int
    vision: Shape
    text: Shape
    context_length: int
    vocab_size: int


FAMILY_ARCHITECTURES = {
    ("open_clip", "tiny"): FamilyArchitecture(
        32, 96, 16, Shape(64, 2, 2, 128), Shape(64, 2, 2, 128), 77, 49408
    ),
    ("open_clip", "whyxrayclip"): FamilyArchitecture(
        768, 224, 14, Shape(1024, 24, 16, 4096), Shape(768, 12, 12, 3072), 77, 49408
    ),
    ("siglip", "tiny"): FamilyArchitecture(64, 96, 16, Shape(64, 2, 2, 128), Shape(64, 2, 2, 128), 64, 0),
    ("siglip", "medsiglip"): FamilyArchitecture(
        1152, 448, 14, Shape(1152, 27, 16, 4304), Shape(1152, 27, 16, 4304), 64, 32000
    ),
    ("clip", "tiny"): FamilyArchitecture(32, 96, 16, Shape(64, 2, 2, 128), Shape(64, 2, 2, 128), 77, 0),
}
"""(family, size) -> shape; a vocab_size of 0 means: the size of the tokenizer written for it."""

CLIP_TINY_MERGES = 4000
SIGLIP_TINY_VOCAB = 600


def _corpus() -> list[str]:
    """Sentences holding every word of the prompts, to train the tiny sentencepiece model on."""
    from meddx.dev.tiny import _vocabulary_words
    from meddx.model.vocabulary import load_vocabulary

    raw = load_vocabulary().raw
    lines = [json.dumps(raw["templates"]), json.dumps(raw["custom_label"])]
    for finding in raw["findings"]:
        lines += [finding.get("name", ""), *finding.get("positive", []), *finding.get("negative", [])]
    words = _vocabulary_words()
    lines += [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return [line.lower() for line in lines if line]


def write_spiece(folder: Path, vocab_size: int = SIGLIP_TINY_VOCAB) -> Path:
    """Train a sentencepiece unigram model on the prompts (SigLIP's ``spiece.model``: pad 0, eos 1, unk 2)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(_corpus()) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "spiece"),
            vocab_size=vocab_size,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            pad_piece="<pad>",
            eos_piece="</s>",
            unk_piece="<unk>",
            hard_vocab_limit=False,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
        )
        path = folder / "spiece.model"
        path.write_bytes((Path(tmp) / "spiece.model").read_bytes())
    return path


def write_clip_bpe(folder: Path, merges: int = CLIP_TINY_MERGES) -> int:
    """CLIP's BPE files (``vocab.json``, ``merges.txt``) from the first ``merges`` merges of open_clip's
    bundled vocabulary, built as CLIP builds its vocabulary; returns the vocabulary size."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bundled = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(bundled) as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : merges + 1]
    pairs = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(pair) for pair in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n", encoding="utf-8"
    )
    return len(vocab)


def _open_clip_native(folder: Path, arch: FamilyArchitecture, seed: int) -> None:
    import open_clip

    from meddx.dev.tiny import save_weights

    config = {
        "model_cfg": {
            "embed_dim": arch.embed_dim,
            "vision_cfg": {
                "image_size": arch.image_size,
                "layers": arch.vision.layers,
                "width": arch.vision.hidden,
                "head_width": arch.vision.hidden // arch.vision.heads,
                "mlp_ratio": arch.vision.mlp / arch.vision.hidden,
                "patch_size": arch.patch,
            },
            "text_cfg": {
                "context_length": arch.context_length,
                "vocab_size": arch.vocab_size,
                "width": arch.text.hidden,
                "heads": arch.text.heads,
                "layers": arch.text.layers,
            },
        },
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_weights(model, folder)


def _vision_config(arch, vision) -> dict:
    """The transformers vision-tower config of a tiny architecture (SigLIP and CLIP name it alike)."""
    return {
        "hidden_size": vision.hidden,
        "intermediate_size": vision.mlp,
        "num_hidden_layers": vision.layers,
        "num_attention_heads": vision.heads,
        "image_size": arch.image_size,
        "patch_size": arch.patch,
    }


def _siglip(folder: Path, arch: FamilyArchitecture, seed: int) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    write_spiece(folder)
    tokenizer = SiglipTokenizer(str(folder / "spiece.model"), model_max_length=arch.context_length)
    tokenizer.save_pretrained(folder)
    vocab = arch.vocab_size or len(tokenizer)
    text = arch.text
    vision = arch.vision
    config = SiglipConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": text.hidden,
            "intermediate_size": text.mlp,
            "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads,
            "max_position_embeddings": arch.context_length,
            "projection_size": vision.hidden,
            "pad_token_id": 1,
            "eos_token_id": 1,
            "bos_token_id": None,
        },
        vision_config=_vision_config(arch, vision),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # a bias that leaves random scores near 0.5, as a trained model's are spread
        model.logit_bias.zero_()
    model.save_pretrained(folder)
    SiglipImageProcessor(
        size={"height": arch.image_size, "width": arch.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(folder)


def _clip(folder: Path, arch: FamilyArchitecture, seed: int) -> None:
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    vocab = write_clip_bpe(folder)
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": arch.context_length,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "do_lower_case": True,
            }
        ),
        encoding="utf-8",
    )
    tokenizer = AutoTokenizer.from_pretrained(
        folder
    )  # from the files: CLIPTokenizer(vocab_file=) ignores them
    tokenizer.save_pretrained(folder)  # adds the tokenizer.json transformers 5 reads first
    text, vision = arch.text, arch.vision
    config = CLIPConfig(
        text_config={
            "vocab_size": arch.vocab_size or vocab,
            "hidden_size": text.hidden,
            "intermediate_size": text.mlp,
            "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads,
            "max_position_embeddings": arch.context_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=_vision_config(arch, vision),
        projection_dim=arch.embed_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
    ).save_pretrained(folder)


BUILDERS = {"open_clip": _open_clip_native, "siglip": _siglip, "clip": _clip}


def make_family_model(folder: Path, *, family: str, size: str, seed: int) -> Path:
    """Write a seeded random model of ``family`` (not ``open_clip_hf``) at ``size`` into ``folder``."""
    if (family, size) not in FAMILY_ARCHITECTURES:
        sizes = sorted(s for f, s in FAMILY_ARCHITECTURES if f == family)
        raise ValueError(f"no {size!r} architecture for family {family!r}; choose one of {sizes}")
    folder.mkdir(parents=True, exist_ok=True)
    BUILDERS[family](folder, FAMILY_ARCHITECTURES[(family, size)], seed)
    return folder
