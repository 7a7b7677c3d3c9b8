"""The templated report: Markdown, HTML and JSON from hand-built analyses; escaping; the disclaimer."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from meddx import DISCLAIMER
from meddx.explain.overlay import FilmMap
from meddx.explain.regions import Region
from meddx.io.study import ImageInfo
from meddx.model.geometry import Geometry
from meddx.notes import Concept, EvidenceItem
from meddx.report.render import escape_markdown, render_html, render_json, render_markdown, report_context
from meddx.result import (
    Analysis,
    Explanation,
    FindingResult,
    Flagging,
    ModelInfo,
    NotesReading,
    OperatingPoint,
    ScoringInfo,
    Timings,
)

ATTACKS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    "[click me](javascript:alert(3))",
    "![pixel](https://evil.example/p.png)",
]


def _finding(fid: str, label: str, probability: float, *, threshold: float = 0.5, **extra) -> FindingResult:
    """A finding at a calibration's operating point, flagged (with its follow-up) as the pipeline would."""
    flagged = probability >= threshold
    follow_up = extra.pop("follow_up", f"Follow up {label.lower()}.")
    return FindingResult(
        id=fid,
        label=label,
        probability=probability,
        image_probability=extra.pop("image_probability", probability),
        zero_shot=probability,
        threshold=threshold,
        flagged=flagged,
        follow_up=follow_up if flagged else "",
        operating_point="calibration",
        kind="probability",
        follow_up_tier=extra.pop("tier", "routine") if flagged and follow_up else None,
        **extra,
    )


CALIBRATED = Flagging(
    "Flags use thresholds from the calibration.",
    (
        OperatingPoint(
            "calibration", "local-dir:/cal", "chosen for sensitivity 0.9 on 200 films", ("effusion",)
        ),
    ),
)


def _analysis(findings: list[FindingResult], **extra) -> Analysis:
    return Analysis(
        model=ModelInfo("local-dir:/models/tiny", "abc1234", "def5678"),
        scoring=ScoringInfo(extra.pop("mode", "zero-shot"), "the rule in words"),
        findings=findings,
        image=ImageInfo("dicom", 64, 48, bits_stored=12, modality="CR", view_position="PA"),
        warnings=extra.pop("warnings", []),
        timings=Timings(load_s=0.1, score_s=0.5, explain_s=0.6, total_s=1.234),
        explanation=extra.pop("explanation", Explanation("gradcam", (), None)),
        created="2025-03-04T05:06:07+00:00",
        preview=np.full((48, 64), 90, np.uint8),
        flagging=extra.pop("flagging", CALIBRATED),
        **extra,
    )


@pytest.fixture
def clear() -> Analysis:
    """Nothing reaches its threshold; no notes, no maps."""
    return _analysis(
        [_finding("effusion", "Pleural effusion", 0.31), _finding("nodule", "Lung nodule", 0.12)]
    )


@pytest.fixture
def flagged() -> Analysis:
    """Two flagged findings (one custom), notes evidence, regions and maps; hostile text everywhere."""
    square = np.zeros((64, 64), np.float32)  # the model input: the 48 x 64 film padded 8 px top and bottom
    square[18:28, 30:40] = 1.0
    heat = FilmMap(square, Geometry(width=64, height=48, pad_left=0, pad_top=8, side=64, size=64))
    evidence = EvidenceItem(
        concept="cough",
        display="Cough",
        status="present",
        span=(0, 5),
        text=ATTACKS[0],
        finding="pneumonia",
        delta_logit=0.6,
        reason="Cough (present) in the notes: raises Pneumonia.",
    )
    concept = Concept("cough", "Cough", "symptom", "present", 0, 5, ATTACKS[3], ("pneumonia",))
    pneumonia = _finding(
        "pneumonia",
        "Pneumonia",
        0.81,
        image_probability=0.7,
        evidence=[evidence, replace(evidence, text=ATTACKS[2], status="absent", delta_logit=-0.4)],
        note_adjustment=0.5,
        regions=[Region(box=[30, 10, 40, 20], score=0.9, location="right lower zone")],
    )
    custom = _finding("custom_label", ATTACKS[1], 0.66, custom=True, follow_up="Review with a radiologist.")
    quiet = _finding("effusion", "Pleural effusion", 0.2)
    return _analysis(
        [quiet, custom, pneumonia],
        notes=NotesReading((concept,), {}),
        maps={"pneumonia": heat},
        explanation=Explanation("gradcam", ("pneumonia",), "Sides are the patient's."),
        warnings=[f"File {ATTACKS[0]}.dcm: window guessed"],
    )


def test_escape_markdown_makes_text_inert():
    for attack in ATTACKS:
        text = escape_markdown(attack)
        assert "<" not in text and ">" not in text
        assert "](" not in text and "![" not in text
    assert escape_markdown("a\n# heading\n- item | cell") == r"a \# heading \- item \| cell"
    assert "://" not in escape_markdown("see https://example.org")


def test_markdown_for_a_clear_film_says_nothing_reached_a_threshold(clear):
    text = render_markdown(clear)
    assert "No finding reached its threshold" in text
    assert "reached their thresholds" not in text
    assert "**Pleural effusion** (calibrated probability from the image 31 %; threshold 50 %)" in text
    assert "On the image, the highest" in text
    assert "Suggested follow-up" not in text
    assert "Evidence from the notes" not in text
    assert DISCLAIMER in text
    assert "`local-dir:/models/tiny`" in text and "`abc1234`" in text
    assert "2025-03-04 05:06 UTC" in text and "1.2 s" in text


def test_markdown_for_flagged_findings_puts_them_first_with_evidence_and_follow_up(flagged):
    text = render_markdown(flagged)
    summary = (
        "2 findings reached their thresholds: **Pneumonia** (calibrated probability from the image 70 %; "
        "the notes raise the odds about 1.6-fold: Cough, Cough (absent)) and"
    )
    assert summary in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| ---" not in line]
    rows = [line for line in rows if "Finding" not in line]
    findings_rows = rows[:3]
    assert "Pneumonia" in findings_rows[0] and "⚑ yes" in findings_rows[0]
    assert "right lower zone" in findings_rows[0]
    assert findings_rows[0].index("70 %") < findings_rows[0].index("81 %"), "the image first, then the notes"
    assert "0.70" not in text and "0.81" not in text, "a calibrated probability is shown as a percentage"
    assert "Pleural effusion" in findings_rows[2] and "| no |" in findings_rows[2]
    assert "### Evidence from the notes" in text
    assert "raises the odds 1\\.8\\-fold" in text and "lowers the odds 1\\.5\\-fold" in text
    assert "log\\-odds" not in text and "log-odds" not in text, "log-odds stay in the JSON"
    assert "Cough, absent&#58; lowers" in text, "one line per piece of evidence, its status in words"
    assert "- **Pneumonia**: Follow up pneumonia\\." in text
    assert "model attention" in text
    assert "Maps and locations from Grad\\-CAM\\. Grad\\-CAM did not pass meddx's faithfulness test" in text
    assert "Sides are the patient" in text
    assert DISCLAIMER in text


def test_markdown_escapes_notes_labels_warnings_and_file_names(flagged):
    text = render_markdown(flagged, filename="<b>Doe</b>](javascript:x).dcm")
    for needle in ("<img", "<script", "<b>", "](", "![", "https://"):
        assert needle not in text, needle
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
    assert "&lt;script&gt;alert\\(2\\)&lt;/script&gt;" in text


def test_html_is_escaped_self_contained_and_shows_the_maps(flagged):
    page = render_html(flagged, filename="<img src=x onerror=alert(1)>.dcm")
    assert page.startswith("<!DOCTYPE html>")
    assert "<img src=x" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "right lower zone" in page
    assert "Maps and locations from Grad-CAM. Grad-CAM did not pass meddx&#39;s faithfulness test" in page
    assert "Sides are the patient&#39;s." in page
    assert DISCLAIMER in page
    assert page.index("Pneumonia") < page.index("Pleural effusion")


def test_html_without_maps_shows_the_film_and_no_evidence_section(clear):
    page = render_html(clear)
    assert page.count('src="data:image/jpeg;base64,') == 1
    assert "Film as analysed" in page
    assert "Evidence from the notes" not in page
    assert "No finding reached its threshold" in page
    assert DISCLAIMER in page


def test_json_is_the_analysis_plus_the_markdown(flagged):
    data = render_json(flagged)
    assert data["report_markdown"] == render_markdown(flagged)
    assert {k: v for k, v in data.items() if k != "report_markdown"} == flagged.to_dict()
    assert data["disclaimer"] == DISCLAIMER


def test_one_context_feeds_every_format(flagged):
    context = report_context(flagged)
    assert [f["label"] for f in context["findings"]][:2] == ["Pneumonia", ATTACKS[1]]
    assert all(fig["src"] is None for fig in context["figures"])
    assert context["show_image_only"] and not context["show_fine_tuned"]
    assert context["disclaimer"] == DISCLAIMER


def test_uncalibrated_scores_are_scores_never_percentages(clear):
    for finding in clear.findings:
        finding.kind, finding.operating_point, finding.threshold = "score", None, None
    clear.flagging = Flagging()
    text = render_markdown(clear)
    assert "uncalibrated model score from the image 0.31" in text
    assert "%" not in text.split("### Limitations")[0].replace("100 %", "")
    assert "| Pleural effusion | 0.31 |" in text


def test_the_report_ranks_by_the_image_not_by_the_notes(clear):
    nodule = clear.findings[1]
    nodule.probability, nodule.image_probability = 0.9, 0.12  # the notes raised it above the effusion
    text = render_markdown(clear)
    assert "highest was **Pleural effusion**" in text
    assert text.index("| Pleural effusion") < text.index("| Lung nodule")


def test_fine_tuned_scores_get_a_column_and_a_limitation(clear):
    clear.findings[0].fine_tuned = 0.44
    clear.scoring = replace(clear.scoring, mode="both")
    text = render_markdown(clear)
    assert "Fine-tuned |" in text and "0.44" in text
    assert "head trained" in text
