"""Operating points and flags: which probability and threshold each finding is judged by, and the words.

A trained head's probability and threshold where it scores the finding (modes other than zero-shot); else a
zero-shot calibration's; else the raw zero-shot score with no operating point, never flagged. A flag compares
the image-only probability with the threshold; the notes' adjustments set no flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from meddx.config import Settings
from meddx.errors import InputError
from meddx.model.calibration import Calibration
from meddx.model.head import TrainedHead, combine
from meddx.model.modes import MODES
from meddx.model.vocabulary import Finding
from meddx.result import PROBABILITY, SCORE, UNCALIBRATED, FindingResult, Flagging, OperatingPoint

NO_FINDING = "no_finding"


@dataclass(frozen=True)
class Cut:
    """One finding's image probability and the operating point it is flagged at (None: never flagged)."""

    probability: float
    threshold: float | None
    source: str | None
    kind: str = SCORE


def cut(
    finding: Finding,
    zero_shot: float,
    fine_tuned: float | None,
    mode: str,
    head: TrainedHead | None,
    calibration: Calibration | None,
) -> Cut:
    """A trained head's probability and threshold where it scores the finding (modes other than zero-shot);
    else a calibration's; else the raw zero-shot score, with no operating point."""
    if head is not None and fine_tuned is not None and mode != "zero-shot":
        cut = head.threshold(finding.id, mode)
        return Cut(
            float(combine(zero_shot, fine_tuned, mode)),
            cut,
            "trained head" if cut is not None else None,
            PROBABILITY,
        )
    if calibration is not None and calibration.covers(finding):
        cut = calibration.threshold(finding.id)
        return Cut(
            calibration.probability(finding.id, zero_shot),
            cut,
            None if cut is None else "calibration",
            PROBABILITY,
        )
    return Cut(zero_shot, None, None)


def flag(results: list[FindingResult], findings: list[Finding]) -> None:
    """Flag at each operating point on the image probability; "no finding" never beside an abnormality;
    follow-ups (and their tier) only on flagged findings."""
    tiers = {f.id: f.tier for f in findings}
    for r in results:
        r.flagged = r.threshold is not None and r.image_probability >= r.threshold
    if any(r.flagged for r in results if r.id != NO_FINDING):
        for r in results:
            if r.id == NO_FINDING:
                r.flagged = False
    for r in results:
        if not r.flagged:
            r.follow_up = ""
        r.follow_up_tier = tiers[r.id] if r.flagged and r.follow_up else None


def flagging(
    results: list[FindingResult],
    settings: Settings,
    head: TrainedHead | None,
    calibration: Calibration | None,
    threshold: float | None,
) -> Flagging:
    """The operating points used, and what the result says about calibration, in words."""
    by_source: dict[str, list[str]] = {}
    for r in results:
        if r.operating_point:
            by_source.setdefault(r.operating_point, []).append(r.id)
    points = []
    for source, ids in by_source.items():
        if source == "user":
            rule = (
                f"one threshold ({threshold:g}) set by the user for every finding; not measured on any data"
            )
            points.append(OperatingPoint(source, None, rule, tuple(ids)))
        elif source == "trained head":
            data = head.metadata["data"]
            rule = (
                f"{head.metadata['thresholds']['rule']}; measured on the head's validation split of "
                f"{data['description']} ({data['split']['validation']} images) only"
            )
            points.append(OperatingPoint(source, settings.probe, rule, tuple(ids)))
        else:
            points.append(OperatingPoint(source, settings.calibration, calibration.rule, tuple(ids)))
    if not points:
        return Flagging(UNCALIBRATED)
    parts = []
    for point in points:
        count = f"{len(point.findings)} finding{'s' if len(point.findings) != 1 else ''}"
        if point.measured:
            parts.append(f"Flags for {count} use thresholds from the {point.source}: {point.rule}.")
        else:
            parts.append(
                f"The threshold for {count} was set by the user ({threshold:g}); it is not a measured "
                "operating point, so its sensitivity and specificity are unknown."
            )
    rest = len(results) - sum(len(p.findings) for p in points)
    if rest:
        parts.append(
            f"The other {rest} finding{'s have' if rest != 1 else ' has'} no operating point: "
            f"{'their scores are' if rest != 1 else 'its score is'} not calibrated for flagging and "
            "never flagged."
        )
    parts.append(
        "A flag compares the image-only probability with the threshold; the notes' adjustments were not "
        "measured and set no flag."
    )
    return Flagging(" ".join(parts), tuple(points))


def scoring_mode(mode: str | None, head: TrainedHead | None) -> str:
    if mode is None:
        return "both" if head is not None else "zero-shot"
    if mode not in MODES:
        raise InputError(f"Unknown scoring mode {mode!r}; choose one of: {', '.join(MODES)}.")
    if mode != "zero-shot" and head is None:
        raise InputError(f"Scoring mode {mode!r} needs a trained head; none is configured (MEDDX_PROBE).")
    return mode


def _round(x: float) -> float:
    return round(float(x), 4)


def finding_results(
    findings: list[Finding],
    zero_shot: list[float],
    cuts: dict[str, Cut],
    fused: dict,
    fine_tuned: dict[str, float],
    threshold: float | None,
) -> list[FindingResult]:
    """One unflagged `FindingResult` per finding, in the findings' order (`flag` sets the flags).

    Args:
        findings: the scored findings.
        zero_shot: their zero-shot scores, in the same order.
        cuts: per finding id, the probability and operating point it is judged by (`cut`).
        fused: per finding id, the notes' fusion (`meddx.notes.fuse`: probability, adjustment, evidence).
        fine_tuned: per finding id, the trained head's probability (empty without a head).
        threshold: one threshold set by the user for every finding, or None.
    """
    results = []
    user_set = threshold is not None
    for f, score in zip(findings, zero_shot, strict=True):
        combined, point = fused[f.id], cuts[f.id]
        results.append(
            FindingResult(
                id=f.id,
                label=f.name,
                probability=_round(combined.probability),
                image_probability=_round(point.probability),
                zero_shot=_round(score),
                threshold=threshold
                if user_set
                else point.threshold
                if point.threshold is None
                else _round(point.threshold),
                flagged=False,
                follow_up=f.follow_up,
                custom=f.custom,
                kind=point.kind,
                operating_point="user" if user_set else point.source,
                fine_tuned=_round(fine_tuned[f.id]) if f.id in fine_tuned else None,
                note_adjustment=_round(combined.adjustment),
                evidence=list(combined.evidence),
            )
        )
    return results
