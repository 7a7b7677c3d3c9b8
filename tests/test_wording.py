"""The words every surface uses: a score is never a percentage, a probability is; the notes' change in the
odds, never in log-odds; values read from the notes as values, past mentions as history; the slow-map
estimate counts batching."""

from __future__ import annotations

import math

from meddx.explain.cost import batched
from meddx.notes import EvidenceItem
from meddx.report import wording
from meddx.result import FindingResult


def _finding(kind: str = "score", adjustment: float = 0.0, evidence=()) -> FindingResult:
    return FindingResult(
        id="pneumonia",
        label="Pneumonia",
        probability=0.8,
        image_probability=0.73,
        zero_shot=0.73,
        threshold=None,
        flagged=False,
        follow_up="",
        kind=kind,
        operating_point="calibration" if kind == "probability" else None,
        note_adjustment=adjustment,
        evidence=list(evidence),
    )


def _evidence(delta: float, status: str = "present", text: str = "fever") -> EvidenceItem:
    return EvidenceItem(
        concept="fever",
        display="Fever",
        status=status,
        span=(0, len(text)),
        text=text,
        finding="pneumonia",
        delta_logit=delta,
        reason="Fever (present) in the notes: +0.47 log-odds on pneumonia. Source: expert default",
    )


def test_a_score_is_two_decimals_and_a_probability_a_percentage():
    assert wording.value(_finding()) == "0.73"
    assert wording.kind_words(_finding()) == "uncalibrated model score"
    assert wording.value(_finding("probability")) == "73 %"
    assert wording.kind_words(_finding("probability")) == "calibrated probability"


def test_the_notes_change_is_said_as_odds_in_words():
    assert wording.notes_change(_finding()) is None
    raised = _finding(adjustment=math.log(1.6), evidence=[_evidence(0.47)])
    assert wording.notes_change(raised) == "the notes raise the odds about 1.6-fold: Fever"
    lowered = _finding(adjustment=-math.log(2), evidence=[_evidence(-0.69, "absent", "no fever")])
    assert wording.notes_change(lowered) == "the notes lower the odds about 2.0-fold: Fever (absent)"
    line = wording.evidence_line(_evidence(0.47))
    assert line == "“fever”: Fever, present: raises the odds 1.6-fold (expert default)"
    assert "log-odds" not in line
    history = wording.evidence_line(_evidence(0.3, "historical", "hx fever"), with_source=False)
    assert history == "“hx fever”: Fever, past history: raises the odds 1.3-fold"


def test_values_read_from_the_notes_are_shown_as_values():
    assert wording.concept_words("age", "Age", "present", 68.0) == "age 68"
    assert wording.concept_words("male", "Male", "present", None) == "male"
    assert wording.concept_words("temperature", "Temperature", "present", 38.5) == "temperature 38.5 °C"
    assert wording.concept_words("respiratory_rate", "Respiratory rate", "present", 30.0) == "RR 30/min"
    assert wording.concept_words("copd", "COPD", "historical", None) == "COPD: past history"


def test_a_slow_map_estimate_counts_its_batches():
    # one pass of 1 takes 1.0 s, of 2 takes 1.5 s: 0.5 s fixed per batch, 0.5 s per sample
    assert batched(1.0, 1.5, 50, 10) == 5 * (0.5 + 10 * 0.5)
    assert batched(1.0, 1.5, 10, 10) == 0.5 + 10 * 0.5
    assert batched(1.0, 0.9, 4, 4) > 0, "timing noise never makes a sample free"


def test_every_notes_status_has_words_on_the_page_and_in_the_report():
    from meddx.app import views
    from meddx.notes.status import Status
    from meddx.report import wording

    for status in Status:
        assert status.value in views.STATUS_WORDS and status.value in wording.STATUS_WORDS, status


def test_advice_in_the_notes_reaches_the_report_as_advice_not_evidence():
    from meddx.notes import extract_concepts
    from meddx.report import wording

    concepts = extract_concepts("Call if she develops fever or chest pain.")
    fever = next(c for c in concepts if c.name == "fever")
    assert fever.status == "hypothetical"
    assert "advice" in wording.STATUS_WORDS[fever.status]
