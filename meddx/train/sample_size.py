"""How many positive and negative images a statistic needs before meddx states it.

Two minimums, one per kind of claim:

- `MIN_PER_CLASS_FOR_INTERVALS` (10 positives *and* 10 negatives): below it, ``eval`` prints "too few
  (n positives, m negatives)" for the finding instead of metrics with 95 % intervals. Why 10:

  * The intervals are percentile bootstraps. Measured with ``scripts/bootstrap_coverage.py`` (binormal
    scores with a true AUROC of 0.8, three negatives per positive, 300 data sets of each size, 300
    resamples each), the "95 %" interval of AUROC held the true value in 82 % of data sets with 3 positives
    and 89 % with 5, and in 92-93 % from 8 to 20: below about 10, the bootstrap interval is too narrow to
    mean what it says. With 1 positive it collapses outright (a sensitivity of "0.000 (0.00-0.00)").
  * A proportion measured on n images moves by 1/n per image: under 10, one image moves a sensitivity or
    specificity by more than 10 points. Even a perfect 10 of 10 has a Wilson 95 % interval of 0.72 to 1.00
    (`meddx.train.calibrate.wilson_interval`), and 8 of 10 one of 0.49 to 0.94: at 10 the interval printed
    is wide enough that nobody reads it as exact; the rule makes sure nothing narrower-looking is printed
    from less.

- `MIN_PER_CLASS_FOR_CALIBRATION` (20 positives *and* 20 negatives; `meddx.train.fit.MIN_RELIABLE_POSITIVES`,
  the rule that already kept ``calibrate`` from choosing a threshold under 20 positives): below it,
  ``calibrate`` refuses to calibrate the finding at all (no Platt scaling, no threshold), says so in its
  output and card, and the finding keeps showing the uncalibrated model score. A calibration is a claim the
  page shows as a probability and flags on; at 20, one image moves the measured sensitivity by 5 points and
  the Wilson interval of 18 of 20 is 0.70 to 0.97, which is as loose as meddx lets a served number be.
"""

from __future__ import annotations

from meddx.train.fit import MIN_RELIABLE_POSITIVES

MIN_PER_CLASS_FOR_INTERVALS = 10
MIN_PER_CLASS_FOR_CALIBRATION = MIN_RELIABLE_POSITIVES


def counted(positives: int, negatives: int) -> str:
    """``"n positives, m negatives"``, singular where it is one."""
    return (
        f"{positives} positive{'' if positives == 1 else 's'}, "
        f"{negatives} negative{'' if negatives == 1 else 's'}"
    )


def too_few(positives: int, negatives: int, minimum: int = MIN_PER_CLASS_FOR_INTERVALS) -> str | None:
    """``"too few (n positives, m negatives)"`` when either class has fewer than ``minimum``; else None."""
    if positives >= minimum and negatives >= minimum:
        return None
    return f"too few ({counted(positives, negatives)})"


__all__ = ["MIN_PER_CLASS_FOR_CALIBRATION", "MIN_PER_CLASS_FOR_INTERVALS", "counted", "too_few"]
