"""Reading feedback back for training: the data specs, the folder reader, and the Hub dataset download.

Data specs read by `load_feedback` (for ``python -m meddx train --data``):
``feedback:DIR`` (a folder of such files, searched recursively) and
``hf-dataset:OWNER/NAME[@REVISION]`` (a Hub dataset repo written by the scheduler; ``HF_HUB_OFFLINE=1``
reads it from the cache). Every record read is checked (`meddx.train.feedback.record.check_record`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from meddx.errors import InputError
from meddx.train.feedback.record import LABELS, check_record
from meddx.train.feedback.writer import FILE_GLOB

FEEDBACK_PREFIX = "feedback:"
HUB_DATASET_PREFIX = "hf-dataset:"


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
