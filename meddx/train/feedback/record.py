"""The clinician feedback record: its fields, the check every record passes, and its constructor.

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
missing field, or a value of the wrong kind. The writer (`meddx.train.feedback.writer.FeedbackWriter`)
checks every record with it before writing, and the reader (`meddx.train.feedback.reading`) every record
it reads.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meddx import __version__
from meddx.errors import InputError

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
KEPT_SUMMARY = (
    "the film's image embedding (a list of numbers from the image model, not the image), the scores shown, "
    "your answers, the scoring mode, the model and meddx versions, a random id and today's date (UTC)"
)
NEVER_KEPT_SUMMARY = "the image, the notes, the file name, DICOM tags, your IP address or any session id"

_ID = re.compile(r"[0-9a-f]{32}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def vocabulary_ids() -> set[str]:
    """The ids of the vocabulary's findings: the only findings a record may name."""
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
    known = vocabulary_ids()
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
