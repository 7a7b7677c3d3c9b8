"""Writing feedback records: the one writer, the app's way to open it, and the push to a Hub dataset.

Records are JSON lines in ``<folder>/feedback-<random>.jsonl`` (one file per running process, appended
under a lock); `FeedbackWriter` is the only code that writes records, and it checks each one
(`meddx.train.feedback.record.check_record`). `feedback_scheduler` pushes the folder to a private Hub
dataset with `huggingface_hub.CommitScheduler` every few minutes.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

from meddx.errors import ModelError
from meddx.train.feedback.record import FeedbackRecord, check_record

FILE_GLOB = "feedback-*.jsonl"


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
