"""Clinician feedback on results: the record, the desk that holds results until answered, the one writer
and its Hub upload, and the readers that bring feedback back for training.

In flow order: `record` (the fields a record may hold, `check_record`, `FeedbackRecord`) -> `desk` (the
app holds each result under a random ``feedback_id`` until the clinician answers: `FeedbackDesk`) ->
`writer` (`FeedbackWriter`, the only writer of records; `feedback_scheduler` pushes them to a private Hub
dataset; `open_feedback` sets both up from the settings) -> `reading` (``feedback:DIR`` and
``hf-dataset:OWNER/NAME`` specs for ``python -m meddx train --data``: `load_feedback`). Nothing that names a
patient or a person is ever kept (see `record`).
"""

from meddx.train.feedback.desk import FeedbackDesk, Pending
from meddx.train.feedback.reading import (
    FEEDBACK_PREFIX,
    HUB_DATASET_PREFIX,
    FeedbackData,
    is_feedback_spec,
    load_feedback,
    read_feedback_folder,
)
from meddx.train.feedback.record import (
    FIELDS,
    KEPT_SUMMARY,
    LABELS,
    MODEL_FIELDS,
    NEVER_KEPT_SUMMARY,
    SCORE_FIELDS,
    SCORING_MODES,
    FeedbackRecord,
    check_record,
)
from meddx.train.feedback.writer import FILE_GLOB, FeedbackWriter, feedback_scheduler, open_feedback

__all__ = [
    "FEEDBACK_PREFIX",
    "FIELDS",
    "FILE_GLOB",
    "HUB_DATASET_PREFIX",
    "KEPT_SUMMARY",
    "LABELS",
    "MODEL_FIELDS",
    "NEVER_KEPT_SUMMARY",
    "SCORE_FIELDS",
    "SCORING_MODES",
    "FeedbackData",
    "FeedbackDesk",
    "FeedbackRecord",
    "FeedbackWriter",
    "Pending",
    "check_record",
    "feedback_scheduler",
    "is_feedback_spec",
    "load_feedback",
    "open_feedback",
    "read_feedback_folder",
]
