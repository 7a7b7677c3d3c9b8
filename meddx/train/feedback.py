"""Clinician feedback on results: the record, its one writer, its readers, and the Hub upload.

A feedback record keeps what a head can learn from and nothing that names a patient or a person:

| field | what |
| --- | --- |
| ``id`` | a random id (uuid4, hex); it links to nothing |
| ``date`` | the UTC date (``YYYY-MM-DD``), no time of day |
| ``meddx_version`` | the meddx version that scored the film |
| ``model`` | the encoder that scored it: ``spec``, ``model``, ``revision``, ``embed_dim`` |
| ``scoring_mode`` | ``zero-shot``, ``fine-tuned`` or ``both`` |
| ``embedding`` | the film's unit image embedding from that encoder (``embed_dim`` floats) |
| ``scores`` | per finding shown, ``{"zero_shot": p, "fine_tuned": p or null}`` |
| ``labels`` | per finding, the clinician's ``present``, ``absent`` or ``not sure`` |
| ``missed`` | finding ids the clinician says the result missed (present, not flagged) |

Never kept: pixels, notes text, file names, DICOM tags, IP addresses, session ids, free-text finding
labels (only vocabulary ids are accepted). `check_record` refuses a record with any other field, a
missing field, or a value of the wrong kind; `FeedbackWriter` is the only code that writes records, and it
checks each one. Records are JSON lines in ``<folder>/feedback-<random>.jsonl`` (one file per running
process, appended under a lock); `feedback_scheduler` pushes the folder to a private Hub dataset with
`huggingface_hub.CommitScheduler` every few minutes.

Data specs read by `load_feedback` (for ``python -m meddx train --data``):
``feedback:DIR`` (a folder of such files, searched recursively) and
``hf-dataset:OWNER/NAME[@REVISION]`` (a Hub dataset repo written by the scheduler; ``HF_HUB_OFFLINE=1``
reads it from the cache).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from meddx import __version__
from meddx.errors import InputError, ModelError

FEEDBACK_PREFIX = "feedback:"
HUB_DATASET_PREFIX = "hf-dataset:"
LABELS = ("present", "absent", "not sure")
"""The answers a clinician can give per finding."""
FIELDS = (
    "id",
    "date",
    "meddx_version",
    "model",
    "scoring_mode",
    "embedding",
    "scores",
    "labels",
    "missed",
)
"""Exactly the fields of a record, in file order."""
MODEL_FIELDS = ("spec", "model", "revision", "embed_dim")
SCORE_FIELDS = ("zero_shot", "fine_tuned")
SCORING_MODES = ("zero-shot", "fine-tuned", "both")
FILE_GLOB = "feedback-*.jsonl"
KEPT_SUMMARY = (
    "the film's image embedding (a list of numbers from the image model, not the image), the scores shown, "
    "your answers, the scoring mode, the model and meddx versions, a random id and today's date (UTC)"
)
NEVER_KEPT_SUMMARY = "the image, the notes, the file name, DICOM tags, your IP address or any session id"

_ID = re.compile(r"[0-9a-f]{32}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _vocabulary_ids() -> set[str]:
    from meddx.model.vocabulary import load_vocabulary

    return {f.id for f in load_vocabulary().findings}


def _is_probability(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def check_record(record: Mapping) -> None:
    """Refuse anything that is not exactly a feedback record (see the module docstring).

    Raises:
        InputError: a field is missing or extra, or a value is of the wrong kind; the message names it.
    """
    if not isinstance(record, Mapping):
        raise InputError("A feedback record must be a JSON object.")
    extra = sorted(set(record) - set(FIELDS))
    missing = [f for f in FIELDS if f not in record]
    if extra:
        raise InputError(f"A feedback record may hold only {', '.join(FIELDS)}; refused: {', '.join(extra)}.")
    if missing:
        raise InputError(f"A feedback record needs {', '.join(missing)}.")
    if not isinstance(record["id"], str) or not _ID.fullmatch(record["id"]):
        raise InputError("A feedback record's id must be 32 lower-case hex digits (a random uuid4).")
    if not isinstance(record["date"], str) or not _DATE.fullmatch(record["date"]):
        raise InputError("A feedback record's date must be a UTC date, YYYY-MM-DD (no time of day).")
    if not isinstance(record["meddx_version"], str) or len(record["meddx_version"]) > 40:
        raise InputError("A feedback record's meddx_version must be a short string.")
    model = record["model"]
    if not isinstance(model, Mapping) or set(model) != set(MODEL_FIELDS):
        raise InputError(f"A feedback record's model must hold exactly {', '.join(MODEL_FIELDS)}.")
    if not all(isinstance(model[k], str) for k in MODEL_FIELDS[:3]) or not isinstance(
        model["embed_dim"], int
    ):
        raise InputError(
            "A feedback record's model needs string spec, model, revision and an integer embed_dim."
        )
    if record["scoring_mode"] not in SCORING_MODES:
        raise InputError(f"A feedback record's scoring_mode must be one of {', '.join(SCORING_MODES)}.")
    embedding = record["embedding"]
    if (
        not isinstance(embedding, list)
        or len(embedding) != model["embed_dim"]
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in embedding
        )
    ):
        raise InputError(f"A feedback record's embedding must be {model['embed_dim']} finite numbers.")
    known = _vocabulary_ids()
    scores, labels, missed = record["scores"], record["labels"], record["missed"]
    if not isinstance(scores, Mapping) or not isinstance(labels, Mapping) or not isinstance(missed, list):
        raise InputError("A feedback record's scores and labels must be objects and missed a list.")
    for finding_id in [*scores, *labels, *missed]:
        if not isinstance(finding_id, str) or finding_id not in known:
            raise InputError(
                f"Feedback names findings of the vocabulary by id only; {str(finding_id)[:40]!r} is not "
                "one (free-text findings are never kept)."
            )
    for finding_id, value in scores.items():
        if (
            not isinstance(value, Mapping)
            or set(value) != set(SCORE_FIELDS)
            or not _is_probability(value["zero_shot"])
            or not (value["fine_tuned"] is None or _is_probability(value["fine_tuned"]))
        ):
            raise InputError(
                f"Scores for {finding_id!r} must be {{'zero_shot': p, 'fine_tuned': p or null}} in [0, 1]."
            )
    for finding_id, value in labels.items():
        if value not in LABELS:
            raise InputError(f"The label for {finding_id!r} must be one of: {', '.join(LABELS)}.")
    if len(set(missed)) != len(missed):
        raise InputError("A missed finding is named twice.")
    contradicted = [f for f in missed if labels.get(f) == "absent"]
    if contradicted:
        raise InputError(f"{', '.join(contradicted)}: marked both absent and missed.")
    if not labels and not missed:
        raise InputError(
            "Nothing to send: mark at least one finding present, absent or not sure, or a missed one."
        )


@dataclass(frozen=True)
class FeedbackRecord:
    """One clinician's answers on one result (the fields of the module docstring)."""

    id: str
    date: str
    meddx_version: str
    model: dict
    scoring_mode: str
    embedding: list[float]
    scores: dict
    labels: dict
    missed: list[str]

    @classmethod
    def create(
        cls,
        *,
        model: Mapping,
        embedding: Iterable[float],
        scores: Mapping[str, Mapping],
        labels: Mapping[str, str],
        missed: Iterable[str] = (),
        scoring_mode: str,
    ) -> FeedbackRecord:
        """A new record with a random id, today's UTC date and this meddx version; checked.

        Args:
            model: The encoder identity (`meddx.model.head.EncoderIdentity.to_dict`).
            embedding: The film's unit image embedding from that encoder.
            scores: Per finding shown, ``{"zero_shot": p, "fine_tuned": p or None}``.
            labels: Per finding, one of `LABELS` (findings left unanswered are simply absent).
            missed: Finding ids the result missed.
            scoring_mode: The mode the result was scored in.

        Raises:
            InputError: the record would not pass `check_record`.
        """
        record = cls(
            id=uuid.uuid4().hex,
            date=dt.datetime.now(dt.UTC).date().isoformat(),
            meddx_version=__version__,
            model={k: model[k] for k in MODEL_FIELDS},
            scoring_mode=scoring_mode,
            embedding=[round(float(v), 7) for v in embedding],
            scores={
                fid: {"zero_shot": float(s["zero_shot"]), "fine_tuned": _optional_float(s.get("fine_tuned"))}
                for fid, s in scores.items()
            },
            labels=dict(labels),
            missed=list(dict.fromkeys(missed)),
        )
        check_record(record.to_dict())
        return record

    def to_dict(self) -> dict:
        """The JSON object written to disk: exactly `FIELDS`."""
        return {name: getattr(self, name) for name in FIELDS}


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)


class FeedbackWriter:
    """Appends checked records to ``<folder>/feedback-<random>.jsonl``: the only writer of feedback.

    Args:
        folder: Where records go (`meddx.config.Settings.feedback_dir`); created if needed.
        scheduler: The `CommitScheduler` that pushes the folder (`feedback_scheduler`), if any: its lock is
            held while appending, so that an upload never reads a half-written line.
    """

    def __init__(self, folder: str | Path, *, scheduler=None) -> None:
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"feedback-{uuid.uuid4().hex}.jsonl"
        self.scheduler = scheduler
        self.lock = scheduler.lock if scheduler is not None else threading.Lock()

    def write(self, record: FeedbackRecord | Mapping) -> str:
        """Check and append one record; return its id.

        Raises:
            InputError: the record has a field outside `FIELDS`, lacks one, or holds a wrong value.
        """
        data = record.to_dict() if isinstance(record, FeedbackRecord) else dict(record)
        check_record(data)
        line = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
        return data["id"]

    def close(self) -> None:
        """Stop the scheduler, if any (it still pushes once more when the process exits)."""
        if self.scheduler is not None:
            self.scheduler.stop()


def open_feedback(settings, *, api=None) -> FeedbackWriter | None:
    """The writer the app uses, from `meddx.config.Settings`; None when feedback is off (no folder).

    With ``settings.feedback_repo`` the folder is also pushed to that private Hub dataset every
    ``settings.feedback_every_min`` minutes (`feedback_scheduler`; ``api`` as there).

    Raises:
        ModelError: the Hub dataset cannot be created or reached.
    """
    if settings.feedback_dir is None:
        return None
    scheduler = None
    if settings.feedback_repo:
        scheduler = feedback_scheduler(
            settings.feedback_dir, settings.feedback_repo, every_min=settings.feedback_every_min, api=api
        )
    return FeedbackWriter(settings.feedback_dir, scheduler=scheduler)


def feedback_scheduler(folder: str | Path, repo_id: str, *, every_min: float = 5, api=None):
    """A `huggingface_hub.CommitScheduler` that pushes the feedback folder to a private Hub dataset.

    Only ``feedback-*.jsonl`` files are pushed, into ``data/`` of the dataset repo (created private if
    needed); the token is the environment's (``HF_TOKEN``: a Space's secret). ``api`` replaces the
    `huggingface_hub.HfApi` (tests pass a fake).

    Raises:
        ModelError: the repo cannot be created or reached (the message says how to fix it).
    """
    from huggingface_hub import CommitScheduler
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            path_in_repo="data",
            every=every_min,
            private=True,
            allow_patterns=[FILE_GLOB],
            hf_api=api,
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(
            f"Feedback cannot be pushed to the Hub dataset {repo_id!r} ({type(exc).__name__}). Fix: set "
            "HF_TOKEN to a token with write access (a Space secret), check MEDDX_FEEDBACK_REPO (owner/name), "
            "and make sure HF_HUB_OFFLINE is not set; or unset MEDDX_FEEDBACK_REPO to keep feedback local."
        ) from exc


# --- results awaiting an answer (the app) ---------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """What the app holds in memory about one result until the clinician answers (or it expires)."""

    embedding: tuple[float, ...]
    scores: dict
    scoring_mode: str
    held_at: float


class FeedbackDesk:
    """Holds each result's embedding and scores in memory under a random ``feedback_id``, and turns an
    answer to that id into one record (`FeedbackRecord.create`, `FeedbackWriter.write`).

    The id is handed to the page and the API with the result; it is never written anywhere, and a record
    gets an id of its own. Results wait at most ``ttl_s`` seconds and ``max_pending`` at a time (the oldest
    go first); an id can be answered once.

    Args:
        writer: Where records go.
        model: The encoder identity of the app's model (`meddx.model.head.EncoderIdentity.to_dict`).
    """

    def __init__(
        self, writer: FeedbackWriter, model: Mapping, *, ttl_s: float = 3600, max_pending: int = 256
    ) -> None:
        from collections import OrderedDict

        self.writer = writer
        self.model = {k: model[k] for k in MODEL_FIELDS}
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._pending and (
            len(self._pending) > self.max_pending
            or now - next(iter(self._pending.values())).held_at > self.ttl_s
        ):
            self._pending.popitem(last=False)

    def hold(self, embedding: Iterable[float], scores: Mapping[str, Mapping], scoring_mode: str) -> str:
        """Keep one result until it is answered; return its ``feedback_id``.

        ``scores`` holds, per finding shown, ``{"zero_shot": p, "fine_tuned": p or None}``; findings outside
        the vocabulary (free-text ones) are dropped here.
        """
        import time

        known = _vocabulary_ids()
        pending = Pending(
            embedding=tuple(float(v) for v in embedding),
            scores={fid: dict(s) for fid, s in scores.items() if fid in known},
            scoring_mode=scoring_mode,
            held_at=time.monotonic(),
        )
        token = uuid.uuid4().hex
        with self._lock:
            self._pending[token] = pending
            self._expire(pending.held_at)
        return token

    def answer(self, feedback_id: str, labels: Mapping[str, str], missed: Iterable[str] = ()) -> dict:
        """Write the record for one held result; return it (as written).

        Args:
            feedback_id: The id `hold` returned.
            labels: Finding id -> ``present``, ``absent`` or ``not sure``; unanswered findings left out.
            missed: Finding ids the result missed.

        Raises:
            InputError: the id is unknown, expired or already answered, or the answers are not valid.
        """
        import time

        labels = {fid: value for fid, value in dict(labels or {}).items() if value}
        with self._lock:
            self._expire(time.monotonic())
            pending = self._pending.get(str(feedback_id or ""))
        if pending is None:
            raise InputError(
                "This result can no longer take feedback: results wait an hour, and each takes one answer. "
                "Analyse the film again to answer."
            )
        record = FeedbackRecord.create(
            model=self.model,
            embedding=pending.embedding,
            scores=pending.scores,
            labels=labels,
            missed=list(missed or []),
            scoring_mode=pending.scoring_mode,
        )
        with self._lock:
            if self._pending.pop(str(feedback_id), None) is None:
                raise InputError("This result has already been answered.")
        self.writer.write(record)
        return record.to_dict()


# --- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackData:
    """Checked feedback records from one source.

    Attributes:
        description: What the source is, safe to store with a head (never a local path).
        records: The records (dicts with exactly `FIELDS`).
    """

    description: str
    records: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per finding id, how many records said ``present``, ``absent``, ``not sure`` or ``missed``."""
        counts: dict[str, dict[str, int]] = {}
        for record in self.records:
            for finding_id, label in record["labels"].items():
                counts.setdefault(finding_id, dict.fromkeys((*LABELS, "missed"), 0))[label] += 1
            for finding_id in record["missed"]:
                counts.setdefault(finding_id, dict.fromkeys((*LABELS, "missed"), 0))["missed"] += 1
        return counts


def is_feedback_spec(spec: str) -> bool:
    """Whether a ``--data`` spec names feedback (``feedback:`` or ``hf-dataset:``)."""
    return spec.strip().startswith((FEEDBACK_PREFIX, HUB_DATASET_PREFIX))


def read_feedback_folder(folder: str | Path, *, description: str = "feedback folder") -> FeedbackData:
    """Read and check every ``feedback-*.jsonl`` under a folder (recursively), in file-name order.

    Raises:
        InputError: the folder is missing or empty, or a line is not a valid record (file and line named).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"Feedback folder {folder.name!r} does not exist (give feedback:DIR).")
    files = sorted(folder.rglob(FILE_GLOB))
    records = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"Cannot read feedback file {path.name!r} ({exc}).") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                check_record(record)
            except (json.JSONDecodeError, InputError) as exc:
                raise InputError(f"{path.name} line {number}: not a valid feedback record ({exc}).") from exc
            records.append(record)
    if not records:
        raise InputError(f"Feedback folder {folder.name!r} holds no records ({FILE_GLOB} files).")
    return FeedbackData(description, tuple(records))


def load_feedback(spec: str) -> FeedbackData:
    """Read a feedback data spec: ``feedback:DIR`` or ``hf-dataset:OWNER/NAME[@REVISION]``.

    Raises:
        InputError: the spec is malformed, the data cannot be found, or a record is invalid.
    """
    spec = spec.strip()
    if spec.startswith(FEEDBACK_PREFIX):
        return read_feedback_folder(spec[len(FEEDBACK_PREFIX) :], description="feedback folder")
    if not spec.startswith(HUB_DATASET_PREFIX):
        raise InputError(f"{spec!r} is not a feedback spec (feedback:DIR or hf-dataset:owner/name).")
    name, _, revision = spec[len(HUB_DATASET_PREFIX) :].partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise InputError(f"Give a Hub dataset after 'hf-dataset:' as owner/name, got {name!r}.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            name,
            repo_type="dataset",
            revision=revision or None,
            allow_patterns=[f"**/{FILE_GLOB}", FILE_GLOB],
        )
    except LocalEntryNotFoundError as exc:
        raise InputError(
            f"Feedback dataset {name!r} is not in the Hugging Face cache and the Hub cannot be reached "
            "(offline mode or no network). Download it on a connected machine first, or use feedback:DIR."
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise InputError(
            f"Feedback dataset {name!r} could not be fetched ({type(exc).__name__}); check the name, your "
            "network and HF_TOKEN (the dataset is private)."
        ) from exc
    return read_feedback_folder(folder, description=f"feedback dataset {name}")


__all__ = [
    "FIELDS",
    "LABELS",
    "FeedbackData",
    "FeedbackDesk",
    "FeedbackRecord",
    "FeedbackWriter",
    "check_record",
    "feedback_scheduler",
    "is_feedback_spec",
    "load_feedback",
    "open_feedback",
    "read_feedback_folder",
]
