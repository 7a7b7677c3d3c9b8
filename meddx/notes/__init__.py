"""Reading clinical notes and folding what they say into the image's findings.

In flow order: `lexicon` (the data files, compiled) -> `matches` (phrases found, longest first) and `values`
(age, temperature, SpO2, RR, HR, BP, pack-years; `durations` of symptoms) -> `context` (ConText scope:
each concept's `status`) and `sections` (headings such as "PMH") -> `reader` (`extract_concepts`,
`finding_statuses`) -> `fusion` (log-odds evidence per finding) -> `evidence` (one line per concept, in
words). Note text is never logged.
"""

from meddx.notes.evidence import STATUS_PHRASES, ConceptEvidence, by_concept
from meddx.notes.fusion import EvidenceItem, FusedFinding, FusionWeights, effect_words, fuse
from meddx.notes.reader import MAX_CHARS, Concept, extract_concepts, finding_statuses, without_surrogates
from meddx.notes.status import PRECEDENCE, STATUS_WORDS, STATUSES, Status, strongest

__all__ = [
    "MAX_CHARS",
    "PRECEDENCE",
    "STATUSES",
    "STATUS_PHRASES",
    "STATUS_WORDS",
    "Concept",
    "ConceptEvidence",
    "EvidenceItem",
    "FusedFinding",
    "FusionWeights",
    "Status",
    "by_concept",
    "effect_words",
    "extract_concepts",
    "finding_statuses",
    "fuse",
    "strongest",
    "without_surrogates",
]
