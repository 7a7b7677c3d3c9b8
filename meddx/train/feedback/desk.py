"""Results awaiting a clinician's answer in the app, and the answer turned into one feedback record.

`FeedbackDesk` holds each result's embedding and scores in memory (never on disk) under a random
``feedback_id``; an answer to that id becomes a record (`meddx.train.feedback.record.FeedbackRecord`)
written by `meddx.train.feedback.writer.FeedbackWriter`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meddx.errors import InputError
from meddx.train.feedback.record import MODEL_FIELDS, FeedbackRecord, vocabulary_ids
from meddx.train.feedback.writer import FeedbackWriter


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

        known = vocabulary_ids()
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
