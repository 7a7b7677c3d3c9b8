"""Reading clinical notes and folding what they say into the image's findings.

In flow order: `lexicon` (the data files, compiled) -> `matches` (phrases found, longest first) and `values`
(age, temperature, SpO2, pack-years) -> `context` (ConText scope: each concept's `status`) -> `reader`
(`extract_concepts`, `finding_statuses`) -> `fusion` (log-odds evidence per finding). Note text is never
logged.
"""

from meddx.notes.fusion import EvidenceItem, FusedFinding, FusionWeights, fuse
from meddx.notes.reader import MAX_CHARS, Concept, extract_concepts, finding_statuses, without_surrogates
from meddx.notes.status import PRECEDENCE, STATUS_WORDS, STATUSES, Status, strongest

__all__ = [
    "MAX_CHARS",
    "PRECEDENCE",
    "STATUSES",
    "STATUS_WORDS",
    "Concept",
    "EvidenceItem",
    "FusedFinding",
    "FusionWeights",
    "Status",
    "extract_concepts",
    "finding_statuses",
    "fuse",
    "strongest",
    "without_surrogates",
]
