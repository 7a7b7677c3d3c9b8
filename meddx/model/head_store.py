"""A trained head as files: the folder (and Hub repo) `meddx.model.head` describes, its model card, saving,
loading by probe spec (``hf-hub:owner/name[@revision]``, ``local-dir:/path``; cached per process) and
publishing."""

from __future__ import annotations

import json
import logging
import threading
from importlib import resources
from pathlib import Path
from string import Template

from meddx.errors import ModelError
from meddx.model.head import HEAD_FORMAT, LinearHead, TrainedHead
from meddx.model.spec import HF_HUB, ModelSpec, hub_snapshot

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
HEAD_CARD = "README.md"
HEAD_FILES = [HEAD_WEIGHTS, HEAD_CONFIG, HEAD_CARD]


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _feedback_section(data: dict) -> str:
    """The card's words on clinician feedback in the training data (empty without any)."""
    feedback = data.get("feedback")
    if not feedback:
        return ""
    rows = [
        [fid, *(c[k] for k in ("present", "absent", "not sure", "missed"))]
        for fid, c in feedback["counts"].items()
    ]
    return (
        f"\n\nClinician feedback: {feedback['records']} records ({', '.join(feedback['sources'])}); each "
        "holds a film's image embedding and the clinician's answers, never the film. Answers per finding "
        '("present" and "missed" train as positive, "absent" as negative, "not sure" not at all):\n\n'
        + _table(["finding", "present", "absent", "not sure", "missed"], rows)
    )


def _with_interval(value: dict, *, signed: bool = False) -> str:
    form = "+.3f" if signed else ".3f"
    low, high = value["ci"]
    return f"{value['auroc']:{form}} ({low:{form}} to {high:{form}})"


def _history_section(history: list[dict]) -> str:
    """The card's promotion history (`meddx.train.promote`), oldest first."""
    if not history:
        return "No promotion decision has been recorded for this head."
    parts = []
    for entry in history:
        mean = entry["mean_auroc"]
        parts.append(
            f"**{entry['date']}: {entry['decision']}** (candidate {entry['candidate']} against current "
            f"{entry['current']}, on {entry['data']['description']}, {entry['data']['images']} images). "
            f"Mean AUROC {mean['candidate']} vs {mean['current']}. {' '.join(entry['reasons'])}\n\n"
            + _table(
                [
                    "finding",
                    "AUROC candidate (95% CI)",
                    "AUROC current (95% CI)",
                    "difference (95% CI)",
                    "ECE cand.",
                    "ECE cur.",
                ],
                [
                    [
                        fid,
                        _with_interval(m["candidate"]),
                        _with_interval(m["current"]),
                        _with_interval(m["difference"], signed=True),
                        m["candidate"]["ece"],
                        m["current"]["ece"],
                    ]
                    for fid, m in entry["findings"].items()
                ],
            )
        )
    return "\n\n".join(parts)


def render_card(metadata: dict) -> str:
    """The model card (``README.md``) for a head, from ``meddx/model/head_card.md``."""
    template = Template(resources.files("meddx.model").joinpath("head_card.md").read_text(encoding="utf-8"))
    encoder = metadata["encoder"]
    validation = metadata["validation"]
    data = metadata["data"]
    metric_rows = [
        [
            name,
            m["positives"],
            m["negatives"],
            m["zero_shot_auroc"],
            m["auroc"],
            m["auprc"],
            m["threshold"],
            m["sensitivity"],
            m["specificity"],
            m["f1"],
            m["ece_uncalibrated"],
            m["ece"],
        ]
        for name, m in zip(metadata["labels"], validation["metrics"].values(), strict=True)
    ]
    data_rows = [
        [name, c["positive"], c["negative"]]
        for name, c in zip(metadata["labels"], data["counts"].values(), strict=True)
    ]
    hub_origin = not encoder["revision"].startswith("sha256:")
    return template.substitute(
        base_model=f"base_model: {encoder['model']}\n" if hub_origin else "",
        labels=", ".join(metadata["labels"]),
        encoder_spec=encoder["spec"],
        encoder_model=encoder["model"],
        encoder_revision=encoder["revision"],
        embed_dim=encoder["embed_dim"],
        data_source=data["description"],
        images=data["images"],
        train_images=data["split"]["train"],
        validation_images=data["split"]["validation"],
        data_table=_table(["finding", "positive", "negative"], data_rows),
        feedback=_feedback_section(data),
        history=_history_section(metadata.get("history", [])),
        metrics_table=_table(
            [
                "finding",
                "pos",
                "neg",
                "zero-shot AUROC",
                "AUROC",
                "AUPRC",
                "threshold",
                "sensitivity",
                "specificity",
                "F1",
                "ECE before",
                "ECE after",
            ],
            metric_rows,
        ),
        threshold_rule=metadata["thresholds"]["rule"],
        calibration_rule=metadata["calibration"]["rule"],
        ece_rule=validation["ece_rule"],
        training=json.dumps(metadata["training"], indent=2),
        created=metadata["created"],
        version=metadata["meddx_version"],
    )


def save_head(head: TrainedHead, folder: str | Path) -> Path:
    """Write ``head.safetensors``, ``head.json`` and ``README.md`` into a folder; return the folder."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "weight": head.linear.weight.detach().contiguous(),
        "bias": head.linear.bias.detach().contiguous(),
    }
    save_file(tensors, str(folder / HEAD_WEIGHTS), metadata={"format": "pt", "meddx": HEAD_FORMAT})
    text = json.dumps(head.metadata, indent=2, allow_nan=False)
    (folder / HEAD_CONFIG).write_text(text + "\n", encoding="utf-8")
    (folder / HEAD_CARD).write_text(render_card(head.metadata), encoding="utf-8")
    return folder


def _probe_fix() -> str:
    return (
        "Fix: on a machine with internet access run `hf download OWNER/NAME --local-dir DIR`, copy DIR here "
        "and set MEDDX_PROBE=local-dir:DIR; or point HF_HOME at a Hugging Face cache that holds the head."
    )


def _head_snapshot(spec: ModelSpec) -> tuple[Path, str]:
    folder = hub_snapshot(
        spec.location,
        spec.revision,
        list(HEAD_FILES),
        what=f"The trained head files for {spec.location!r}",
        fix=_probe_fix(),
    )
    return folder, folder.name


def read_head(folder: Path, *, source: str | None = None, revision: str | None = None) -> TrainedHead:
    """Read a head folder (no cache, no Hub): the files `save_head` writes.

    Raises:
        ModelError: files are missing or damaged.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    label = source or str(folder)
    missing = [name for name in (HEAD_WEIGHTS, HEAD_CONFIG) if not (folder / name).is_file()]
    if missing:
        raise ModelError(
            f"{label} is not a trained meddx head: {' and '.join(missing)} missing. Point MEDDX_PROBE or "
            "--probe at a folder written by `python -m meddx train --out DIR`."
        )
    try:
        tensors = load_file(str(folder / HEAD_WEIGHTS))
        metadata = json.loads((folder / HEAD_CONFIG).read_text(encoding="utf-8"))
        linear = LinearHead(tensors["weight"], tensors["bias"])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"The trained head {label} is damaged ({type(exc).__name__}). Train or download it again."
        ) from exc
    return TrainedHead(linear, metadata, source=source, revision=revision)


def _load_uncached(spec: str) -> TrainedHead:
    try:
        parsed = ModelSpec.parse(spec)
    except ModelError:
        raise ModelError(
            f"Unrecognised probe spec {spec!r}. Use 'hf-hub:owner/name' (optionally '@revision') or "
            "'local-dir:/path/to/head'."
        ) from None
    if parsed.scheme == HF_HUB:
        folder, revision = _head_snapshot(parsed)
        return read_head(folder, source=str(parsed), revision=revision)
    folder = Path(parsed.location).expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"Trained head folder {folder} does not exist. Check MEDDX_PROBE / --probe.")
    return read_head(folder, source=str(parsed))


_CACHE: dict[str, TrainedHead] = {}
_CACHE_LOCK = threading.Lock()


def load_head(spec: str) -> TrainedHead:
    """Load a head by probe spec once per process (thread-safe); ``HF_HUB_OFFLINE=1`` is respected.

    Raises:
        ModelError: the spec is malformed, or the head is missing or damaged (the message has the fix).
    """
    with _CACHE_LOCK:
        if spec not in _CACHE:
            _CACHE[spec] = _load_uncached(spec)
            log.info("loaded trained head %s (revision %s)", spec, _CACHE[spec].revision)
        return _CACHE[spec]


def clear_head_cache() -> None:
    """Forget loaded heads (tests, or to reload after retraining into the same folder)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def publish_head(folder: str | Path, repo_id: str, *, api=None, private: bool | None = None) -> str:
    """Upload a head folder to a Hub model repo (created if needed); return the repo URL.

    Args:
        folder: A folder written by `save_head`; it is read back and checked before anything is sent.
        repo_id: ``owner/name``.
        api: A `huggingface_hub.HfApi` (or an object with its ``create_repo`` and ``upload_folder``);
            a default ``HfApi()`` using the logged-in token when omitted.
        private: Create the repo private (None: the Hub's default).

    Raises:
        ModelError: the folder is not a head, or the Hub refused (the message says how to fix it).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder).expanduser().resolve()
    head = read_head(folder)
    api = api or HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            allow_patterns=HEAD_FILES,
            commit_message=f"meddx head ({', '.join(head.finding_ids)}) for {head.encoder.key}",
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(
            f"Could not publish the head to {repo_id!r} ({type(exc).__name__}: {exc}). Fix: log in with "
            "`hf auth login` or set HF_TOKEN to a token with write access, check the repo name, and make "
            "sure HF_HUB_OFFLINE is not set."
        ) from exc
    return str(url)
