"""Do the notes and the DICOM header describe the same patient? Age and sex compared, a warning if not.

The notes' age is the first age they state (a later "smoker since age 16" is not the patient's age, so a
header age that matches any stated age is accepted); their sex is the one sex word stated as present
("male", "woman", "58M"...), none when both are. Ages within `AGE_TOLERANCE_YEARS` agree (a birthday
between the study and the notes); ages of 90 and over are compared as "90 or older", the most a
de-identified header may say. Only M and F are compared. Neither value is logged, kept or repeated: the
warning names only which of the two differ, so it can be stored (batch output) without them.
"""

from __future__ import annotations

from meddx.io.study import Demographics
from meddx.notes.reader import Concept
from meddx.notes.status import Status

AGE_TOLERANCE_YEARS = 1.0
OLDEST = 90  # HIPAA Safe Harbor: ages over 89 are aggregated into "90 or older"


def _capped(age: float) -> float:
    return min(age, OLDEST)


def demographic_warnings(
    header: Demographics | None, concepts: list[Concept] | tuple[Concept, ...]
) -> list[str]:
    """A warning when the notes' age or sex disagrees with the DICOM header's, else none."""
    if header is None:
        return []
    present = sorted((c for c in concepts if c.status == Status.PRESENT), key=lambda c: c.start)
    ages = [c.value for c in present if c.name == "age" and c.value is not None]
    sexes = {c.name for c in present if c.name in ("male", "female")}
    header_age = header.age_years
    age_differs = (
        bool(ages)
        and header_age is not None
        and all(abs(_capped(a) - _capped(header_age)) > AGE_TOLERANCE_YEARS for a in ages)
    )
    notes_sex = sexes.pop() if len(sexes) == 1 else None
    sex_differs = notes_sex is not None and header.sex in ("M", "F") and notes_sex[0].upper() != header.sex
    if not (age_differs or sex_differs):
        return []
    differs = " and ".join(
        name for name, differ in (("age (by more than a year)", age_differs), ("sex", sex_differs)) if differ
    )
    verb = "differ" if age_differs and sex_differs else "differs"
    return [
        f"The patient's {differs} in the notes {verb} from the DICOM header: check that the notes and the "
        "film belong to the same patient."
    ]
