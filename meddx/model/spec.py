"""Which model: spec strings resolved to local folders, and ``download`` for an offline copy.

A model is named by a spec string in open_clip's spelling:

- ``hf-hub:org/name`` or ``hf-hub:org/name@revision``: a model repo on the Hugging Face Hub (or in the
  local Hugging Face cache; ``HF_HUB_OFFLINE=1`` is respected);
- ``local-dir:/path``: a folder written by ``python -m meddx download`` or ``make-tiny-model``.

The family is found from the repo's files (`detect_family`): ``open_clip_config.json`` (with a Hugging Face
text tower named in its ``text_cfg``, or open_clip's own text transformer), else ``config.json``'s
``model_type`` (transformers ``siglip`` or ``clip``). Both schemes resolve to local folders (the repo and,
for open_clip with a Hugging Face text tower, that tower's repo) before anything is built
(`meddx.model.encoder`), so open_clip and transformers never reach the network themselves.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from meddx.errors import ModelError

log = logging.getLogger(__name__)

HF_HUB = "hf-hub"
LOCAL_DIR = "local-dir"
CONFIG_NAME = "open_clip_config.json"
HF_CONFIG_NAME = "config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
WEIGHT_NAMES = (*OPEN_CLIP_WEIGHTS, *HF_WEIGHTS)
SOURCE_NAME = "meddx_source.json"
TEXT_TOWER_DIR = "text_tower"
CARD_PATTERNS = ["README.md", "LICENSE*"]
MODEL_PATTERNS = [CONFIG_NAME, *OPEN_CLIP_WEIGHTS, *CARD_PATTERNS]
HF_MODEL_PATTERNS = [
    HF_CONFIG_NAME,
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "vocab.json",
    "merges.txt",
    *CARD_PATTERNS,
]
FAMILY_PATTERNS = {"open_clip_hf": MODEL_PATTERNS, "open_clip": MODEL_PATTERNS}
HF_MODEL_TYPES = {"siglip": "siglip", "clip": "clip"}
"""``config.json``'s ``model_type`` -> meddx family (an architecture meddx knows how to score and map)."""
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
    family: str = "open_clip_hf"

    @property
    def weights(self) -> Path:
        """The folder's weights file (the first of `WEIGHT_NAMES` present; a sharded checkpoint's index)."""
        found = next((self.folder / n for n in WEIGHT_NAMES if (self.folder / n).is_file()), None)
        if found is None:
            raise ModelError(
                f"{self.spec} has a config but no weights ({' or '.join(WEIGHT_NAMES)}). "
                "Download the model again (`python -m meddx download`)."
            )
        return found


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
        "holds the model and its text tower. To try the page offline without it (from a source checkout): "
        "`python -m meddx make-tiny-model /tmp/meddx-tiny`, then `MEDDX_MODEL=local-dir:/tmp/meddx-tiny "
        "python app.py`; that model has random weights, its scores mean nothing, and the page says so."
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
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except GatedRepoError as exc:
        raise ModelError(gated_message(repo_id)) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelError(gated_message(repo_id)) from exc
        raise ModelError(
            f"{what} could not be fetched from the Hugging Face Hub ({type(exc).__name__}). Check the repo "
            f"name and revision, and your network or HF_TOKEN. {fix}"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"{what} are not in the local Hugging Face cache and the Hub cannot be reached (offline mode or "
            f"no network). {fix}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{what} could not be fetched from the Hugging Face Hub ({type(exc).__name__}). Check the repo "
            f"name and revision, and your network or HF_TOKEN. {fix}"
        ) from exc


def gated_message(repo_id: str) -> str:
    """The one line for a repo the Hub refuses without accepted terms or a token (401/403)."""
    return (
        f"{repo_id} is a gated model: accept its terms on https://huggingface.co/{repo_id} with your Hugging "
        "Face account, then set HF_TOKEN to a token of that account (a Space: a secret named HF_TOKEN)."
    )


def detect_family(folder: Path, spec: ModelSpec) -> str:
    """Which family a model folder holds, from its files: never from its name.

    ``open_clip_config.json`` -> ``open_clip_hf`` when its ``text_cfg`` names a Hugging Face text tower,
    else ``open_clip`` (open_clip's own text transformer); otherwise ``config.json``'s ``model_type``
    (`HF_MODEL_TYPES`).
    """
    if (folder / CONFIG_NAME).is_file():
        text_cfg = read_config(folder, spec)["model_cfg"]["text_cfg"]
        return (
            "open_clip_hf"
            if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
            else "open_clip"
        )
    path = folder / HF_CONFIG_NAME
    if path.is_file():
        try:
            model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
        except ValueError as exc:
            raise ModelError(f"{spec}: {HF_CONFIG_NAME} is not valid JSON ({one_line(exc)}).") from exc
        if model_type in HF_MODEL_TYPES:
            return HF_MODEL_TYPES[model_type]
        raise ModelError(
            f"{spec} is a transformers {model_type!r} model; meddx hosts image-text models of type "
            f"{' or '.join(sorted(HF_MODEL_TYPES))} (or open_clip models)."
        )
    read_config(folder, spec)  # raises: neither config is there
    return "open_clip_hf"


def read_config(folder: Path, spec: ModelSpec) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(
            f"{spec} has no {CONFIG_NAME} (open_clip) or {HF_CONFIG_NAME} (transformers); it is not a model "
            "folder. Use a folder written by `python -m meddx download` or `python -m meddx make-tiny-model`."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config["model_cfg"]["text_cfg"], dict):
            raise TypeError("text_cfg must be a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else one_line(exc)
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
    """Find (or fetch) the files of a model spec, find its family, and record the revision that is loaded."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    if spec.scheme == HF_HUB:
        what, fix = f"The model files for {spec.location!r}", _offline_fix(spec)
        configs = [CONFIG_NAME, HF_CONFIG_NAME, *CARD_PATTERNS]
        folder = hub_snapshot(spec.location, spec.revision, configs, what=what, fix=fix)
        family = detect_family(folder, spec)
        patterns = FAMILY_PATTERNS.get(family, HF_MODEL_PATTERNS)
        folder = hub_snapshot(spec.location, spec.revision, patterns, what=what, fix=fix)
        if family not in FAMILY_PATTERNS and not any((folder / n).is_file() for n in HF_WEIGHTS):
            folder = hub_snapshot(spec.location, spec.revision, ["pytorch_model.bin"], what=what, fix=fix)
        revision = folder.name
        source = {}
    else:
        folder = Path(spec.location).expanduser().resolve()
        if not folder.is_dir():
            raise ModelError(f"Model folder {folder} does not exist. Check MEDDX_MODEL / --model.")
        source_path = folder / SOURCE_NAME
        source = json.loads(source_path.read_text(encoding="utf-8")) if source_path.is_file() else {}
        revision = source.get("revision") or "unversioned local folder"
        family = detect_family(folder, spec)
    if family != "open_clip_hf":  # the text tower is in the repo itself
        return ResolvedModel(spec, folder, folder, revision, None, family)
    config = read_config(folder, spec)
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
    return ResolvedModel(spec, folder, text_folder, revision, text_revision, family)


def download_model(spec: str, to: str | Path) -> Path:
    """Write a self-contained copy of a Hub model (weights, config, tokenizer; an open_clip model's Hugging
    Face text tower in a subfolder).

    The copy loads with ``local-dir:TO`` and no network: an open_clip config is rewritten to point at the text
    tower inside the folder, and ``meddx_source.json`` records where it came from and at which revision.
    """
    spec_ = ModelSpec.parse(spec)
    if spec_.scheme != HF_HUB:
        raise ModelError("`download` copies a Hub model: use --model hf-hub:org/name[@revision].")
    resolved = resolve(spec_)
    to = Path(to).expanduser().resolve()
    to.mkdir(parents=True, exist_ok=True)
    copies = [(resolved.folder, to)]
    if resolved.family == "open_clip_hf":
        copies.append((resolved.text_folder, to / TEXT_TOWER_DIR))
    for src_dir, dst_dir in copies:
        dst_dir.mkdir(parents=True, exist_ok=True)
        for item in src_dir.iterdir():
            if item.is_file():
                shutil.copyfile(item, dst_dir / item.name)
    source = {"model": str(spec_), "revision": resolved.revision, "family": resolved.family}
    if resolved.family == "open_clip_hf":
        config = read_config(to, spec_)
        text_cfg = config["model_cfg"]["text_cfg"]
        source.update(text_tower=_text_tower_name(config), text_revision=resolved.text_revision)
        text_cfg["hf_model_name"] = TEXT_TOWER_DIR
        text_cfg["hf_tokenizer_name"] = TEXT_TOWER_DIR
        (to / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (to / SOURCE_NAME).write_text(json.dumps(source, indent=2), encoding="utf-8")
    return to


def one_line(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters (torch's can run to pages)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
