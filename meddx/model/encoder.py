"""Load the image-text encoder and turn images and texts into embeddings.

A model is named by a spec string in open_clip's spelling:

- ``hf-hub:org/name`` or ``hf-hub:org/name@revision``: an open_clip repo on the Hugging Face Hub (or in the
  local Hugging Face cache; ``HF_HUB_OFFLINE=1`` is respected);
- ``local-dir:/path``: a folder written by ``python -m meddx download`` or ``make-tiny-model``.

Both resolve to two local folders (the open_clip repo and its Hugging Face text tower) before anything is
built, so one code path loads every model, and open_clip and transformers never reach the network
themselves. Models are cached per process; loading is thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from meddx.errors import ModelError

log = logging.getLogger(__name__)

HF_HUB = "hf-hub"
LOCAL_DIR = "local-dir"
CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
SOURCE_NAME = "meddx_source.json"
TEXT_TOWER_DIR = "text_tower"
MODEL_PATTERNS = [CONFIG_NAME, *WEIGHT_NAMES, "README.md", "LICENSE*"]
TOKENIZER_VOCABULARIES = ("vocab.txt", "tokenizer.json")
TEXT_TOWER_PATTERNS = [
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``hf-hub:org/name[@revision]`` or ``local-dir:/path``."""

    scheme: str
    location: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        """Parse a spec string; raise `ModelError` for anything else."""
        spec = (spec or "").strip()
        scheme, sep, rest = spec.partition(":")
        if not sep or scheme not in (HF_HUB, LOCAL_DIR) or not rest.strip():
            raise ModelError(
                f"Unrecognised model spec {spec!r}. Use 'hf-hub:org/name' (optionally '@revision') "
                "or 'local-dir:/path/to/folder'."
            )
        if scheme == HF_HUB:
            repo, _, revision = rest.partition("@")
            return cls(HF_HUB, repo.strip(), revision.strip() or None)
        return cls(LOCAL_DIR, rest.strip())

    def __str__(self) -> str:
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{self.scheme}:{self.location}{suffix}"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec's files are on this machine, and which revision they are."""

    spec: ModelSpec
    folder: Path
    text_folder: Path
    revision: str
    text_revision: str | None = None


def _offline_fix(spec: ModelSpec) -> str:
    if spec.scheme == LOCAL_DIR:  # only its text tower is looked up in the cache
        return (
            f"Fix: the text tower that {spec} names in its {CONFIG_NAME} is neither a folder inside it nor "
            "cached; copy the complete folder written by `python -m meddx download` (the text tower is its "
            f"{TEXT_TOWER_DIR}/ subfolder), or point HF_HOME at a Hugging Face cache that holds it."
        )
    return (
        f"Fix: on a machine with internet access run `python -m meddx download --model {spec} --to DIR`, "
        "copy DIR here and set MEDDX_MODEL=local-dir:DIR; or point HF_HOME at a Hugging Face cache that "
        "holds the model and its text tower."
    )


def hub_snapshot(repo_id: str, revision: str | None, patterns: list[str], *, what: str, fix: str) -> Path:
    """Return the local snapshot folder of a Hub repo, from the cache or by downloading it.

    Args:
        repo_id: the Hub repo.
        revision: a branch, tag or commit; None for ``main``.
        patterns: the files to fetch.
        what: how messages name the repo's files, e.g. "The model files for 'org/name'".
        fix: the sentence telling the user what to do, appended to every `ModelError`.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"{what} are not in the local Hugging Face cache and the Hub cannot be reached (offline mode or "
            f"no network). {fix}"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(
            f"{what} could not be fetched from the Hugging Face Hub ({type(exc).__name__}). Check the repo "
            f"name and revision, and your network or HF_TOKEN. {fix}"
        ) from exc


def _read_config(folder: Path, spec: ModelSpec) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(
            f"{spec} has no {CONFIG_NAME}; it is not an open_clip model folder. Use a folder written by "
            "`python -m meddx download` or `python -m meddx make-tiny-model`."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config["model_cfg"]["text_cfg"], dict):
            raise TypeError("text_cfg must be a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else _one_line(exc)
        raise ModelError(
            f"{spec}: {CONFIG_NAME} is not a valid open_clip config ({detail}). Download the model again "
            "(`python -m meddx download`)."
        ) from exc
    return config


def _text_tower_name(config: dict) -> str:
    text_cfg = config["model_cfg"]["text_cfg"]
    name = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    if not name:
        raise ModelError("Only open_clip models with a Hugging Face text tower are supported.")
    return name


def resolve(spec: str | ModelSpec) -> ResolvedModel:
    """Find (or fetch) the files of a model spec and record the revision that will be loaded."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    if spec.scheme == HF_HUB:
        folder = hub_snapshot(
            spec.location,
            spec.revision,
            MODEL_PATTERNS,
            what=f"The model files for {spec.location!r}",
            fix=_offline_fix(spec),
        )
        revision = folder.name
        source = {}
    else:
        folder = Path(spec.location).expanduser().resolve()
        if not folder.is_dir():
            raise ModelError(f"Model folder {folder} does not exist. Check MEDDX_MODEL / --model.")
        source_path = folder / SOURCE_NAME
        source = json.loads(source_path.read_text(encoding="utf-8")) if source_path.is_file() else {}
        revision = source.get("revision") or "unversioned local folder"
    config = _read_config(folder, spec)
    tower = _text_tower_name(config)
    text_revision = source.get("text_revision")
    if (folder / tower).is_dir():
        text_folder = (folder / tower).resolve()
    elif Path(tower).is_absolute() and Path(tower).is_dir():
        text_folder = Path(tower)
    else:
        text_folder = hub_snapshot(
            tower,
            None,
            TEXT_TOWER_PATTERNS,
            what=f"The text tower files for {tower!r}",
            fix=_offline_fix(spec),
        )
        text_revision = text_folder.name
    return ResolvedModel(spec, folder, text_folder, revision, text_revision)


def download_model(spec: str, to: str | Path) -> Path:
    """Write a self-contained copy of a Hub model (weights, config, text tower config and tokenizer).

    The copy loads with ``local-dir:TO`` and no network: the config is rewritten to point at the text
    tower inside the folder, and ``meddx_source.json`` records where it came from and at which revision.
    """
    spec_ = ModelSpec.parse(spec)
    if spec_.scheme != HF_HUB:
        raise ModelError("`download` copies a Hub model: use --model hf-hub:org/name[@revision].")
    resolved = resolve(spec_)
    to = Path(to).expanduser().resolve()
    (to / TEXT_TOWER_DIR).mkdir(parents=True, exist_ok=True)
    for src_dir, dst_dir in ((resolved.folder, to), (resolved.text_folder, to / TEXT_TOWER_DIR)):
        for item in src_dir.iterdir():
            if item.is_file():
                shutil.copyfile(item, dst_dir / item.name)
    config = _read_config(to, spec_)
    text_cfg = config["model_cfg"]["text_cfg"]
    source = {
        "model": str(spec_),
        "revision": resolved.revision,
        "text_tower": _text_tower_name(config),
        "text_revision": resolved.text_revision,
    }
    text_cfg["hf_model_name"] = TEXT_TOWER_DIR
    text_cfg["hf_tokenizer_name"] = TEXT_TOWER_DIR
    (to / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (to / SOURCE_NAME).write_text(json.dumps(source, indent=2), encoding="utf-8")
    return to


@dataclass(frozen=True)
class Geometry:
    """How an original image was placed in the square model input (to map results back onto it)."""

    width: int
    height: int
    pad_left: int
    pad_top: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Model-input pixels per original pixel."""
        return self.size / self.side


class PadToSquare:
    """Pad an image to a square (centred, black), then resize: a centre crop would cut off lung edges."""

    def __init__(self, size: int, *, fill: int = 0) -> None:
        self.size = size
        self.fill = fill

    def __call__(self, image: Image.Image) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        side = max(width, height)
        left, top = (side - width) // 2, (side - height) // 2
        canvas = Image.new(image.mode, (side, side), self.fill)
        canvas.paste(image, (left, top))
        # reducing_gap: shrink by whole factors first (fast), then bicubic over the last 3x; same look.
        resized = canvas.resize((self.size, self.size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return resized, Geometry(width, height, left, top, side, self.size)


@dataclass
class Encoder:
    """A loaded image-text model with its tokenizer and preprocessing."""

    resolved: ResolvedModel
    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    direction_cache: dict = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> str:
        """The spec string this encoder was loaded from."""
        return str(self.resolved.spec)

    @property
    def revision(self) -> str:
        """The revision actually loaded (a Hub commit hash, or what a downloaded folder records)."""
        return self.resolved.revision

    @property
    def fingerprint(self) -> str:
        """Identifies these exact weights (spec, revision, weight file size and time) for on-disk caches."""
        weights = next(self.resolved.folder / n for n in WEIGHT_NAMES if (self.resolved.folder / n).is_file())
        stat = weights.stat()
        raw = f"{self.spec}|{self.revision}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature (already exponentiated)."""
        return float(self.model.logit_scale.detach().exp())

    @property
    def visual(self) -> torch.nn.Module:
        """The image tower."""
        return self.model.visual

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """One image to a model input tensor (3, S, S) and the geometry that undoes the padding."""
        from torchvision.transforms import functional  # loaded with open_clip, which builds the model

        square, geometry = PadToSquare(self.image_size)(image)
        pixels = functional.normalize(functional.to_tensor(square.convert("RGB")), self.mean, self.std)
        return pixels, geometry

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings for a batch of preprocessed images (N, 3, S, S)."""
        return self.model.encode_image(pixels, normalize=True)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids trimmed to the longest text: padding to the full context costs ~12x, same result."""
        tokens = self.tokenizer(list(texts))
        pad_id = getattr(self.tokenizer.tokenizer, "pad_token_id", 0) or 0
        used = (tokens != pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D) in one batch (`meddx.model.zero_shot` caches what it needs)."""
        with torch.inference_mode():
            return self.model.encode_text(self.tokenize(list(texts)), normalize=True)


def build_encoder(resolved: ResolvedModel) -> Encoder:
    """Build the open_clip model and tokenizer from resolved local folders."""
    import open_clip
    from accelerate import init_empty_weights
    from open_clip.tokenizer import HFTokenizer

    config = _read_config(resolved.folder, resolved.spec)
    if not any((resolved.folder / name).is_file() for name in WEIGHT_NAMES):
        raise ModelError(
            f"{resolved.spec} has a config but no weights ({' or '.join(WEIGHT_NAMES)}). "
            "Download the model again (`python -m meddx download`)."
        )
    if not any((resolved.text_folder / name).is_file() for name in TOKENIZER_VOCABULARIES):
        raise ModelError(  # transformers would build a tokenizer that reads every word as unknown
            f"{resolved.spec}: the text tower in {resolved.text_folder} has no tokenizer vocabulary "
            f"({' or '.join(TOKENIZER_VOCABULARIES)}). Download the model again (`python -m meddx download`)."
        )
    text_cfg = dict(config["model_cfg"]["text_cfg"])
    text_cfg.update(
        hf_model_name=str(resolved.text_folder),
        hf_tokenizer_name=str(resolved.text_folder),
        hf_model_pretrained=False,
    )
    checkpoint = next(resolved.folder / n for n in WEIGHT_NAMES if (resolved.folder / n).is_file())
    try:
        # Parameters are made without memory (buffers for real) and the checkpoint's tensors become them:
        # no random initialisation to overwrite, and never two copies of the weights in memory.
        with init_empty_weights(include_buffers=False), _quiet_random_init_warning():
            model = open_clip.create_model(
                f"local-dir:{resolved.folder}",
                text_cfg=text_cfg,
                pretrained_text=False,
                load_weights=False,
                device=None,  # .to("cpu") cannot move parameters that have no data yet
            )
        model.load_state_dict(_read_weights(checkpoint, model), strict=True, assign=True)
        tokenizer = HFTokenizer(str(resolved.text_folder), context_length=text_cfg.get("context_length", 77))
    except Exception as exc:  # any failure to build from files is the user's to fix, with this message
        raise ModelError(
            f"{resolved.spec} could not be built from its files ({type(exc).__name__}: {_one_line(exc)}). "
            "The weights may be damaged or not match the config: download the model again."
        ) from exc
    model.eval()
    preprocess_cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    return Encoder(
        resolved=resolved,
        model=model,
        tokenizer=tokenizer,
        image_size=image_size,
        mean=tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
    )


class _RandomInitWarning(logging.Filter):
    """Drops open_clip's "initialized randomly" warning: the checkpoint is assigned right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    root, quiet = logging.getLogger(), _RandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _read_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An open_clip checkpoint's tensors, read into memory with the keys ``model`` expects.

    Read, not memory-mapped: the model then never depends on the file staying as it was.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path, backend="pread")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    position_ids = "text.transformer.embeddings.position_ids"  # older transformers saved this buffer
    if position_ids in state and position_ids not in model.state_dict():
        del state[position_ids]
    return state


def _one_line(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters (torch's can run to pages)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: str, *, threads: int | None = None) -> Encoder:
    """Load a model once per process (thread-safe) and return the cached `Encoder`."""
    if threads:
        torch.set_num_threads(threads)
    with _CACHE_LOCK:
        if spec not in _CACHE:
            log.info("loading model %s", spec)
            _CACHE[spec] = build_encoder(resolve(spec))
            log.info("loaded model %s at revision %s", spec, _CACHE[spec].revision)
        return _CACHE[spec]


def clear_cache() -> None:
    """Forget loaded models (tests, or to reload after a download)."""
    with _CACHE_LOCK:
        _CACHE.clear()
