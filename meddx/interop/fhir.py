"""A FHIR R4 Bundle (type collection) of one analysis: a DiagnosticReport and one Observation per finding.

Built and validated with fhir.resources' R4B models (FHIR 4.3.0): fhir.resources 7 and later ship R5, R4B,
STU3 and DSTU2, and the last release with R4 (4.0.1) models, 6.x, needs pydantic 1. Every element used here
(DiagnosticReport status, category, code, effectiveDateTime, issued, imagingStudy, result, conclusion;
Observation status, category, code, valueQuantity, interpretation, method, derivedFrom, component, note)
exists with the same type and cardinality in R4 4.0.1, so the JSON is valid R4 for these two resources.

- **DiagnosticReport**: status ``preliminary``, category Radiology (v2-0074 ``RAD``, text "imaging"), code
  LOINC 18748-4 "Diagnostic imaging study", the conclusion (flagged findings or "none flagged", how flags
  were decided, and the disclaimer), ``result`` pointing to the Observations, and ``imagingStudy`` naming
  the DICOM study by its Study Instance UID when the input was DICOM.
- **Observation** per finding: status ``preliminary``, category ``imaging``, code in meddx's finding system
  (`FINDING_SYSTEM`), ``valueQuantity`` the probability (image and notes; UCUM ``1``), components for the
  image-only probability and the threshold, ``interpretation`` only when flagged (v3 ``A``, with the
  operating point in words), ``method`` naming meddx, the model and the scoring mode, ``derivedFrom`` the
  study, and a note on the operating point (calibrated or not).

No subject, performer or other identifier: the only reference to anything outside is the study UID.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from meddx import __version__
from meddx.errors import InputError
from meddx.result import Analysis, FindingResult

FHIR_VERSION = "4.0.1"
"""The FHIR release the JSON is written for (R4); validated with R4B models, see the module's text."""
FINDING_SYSTEM = "urn:meddx:finding"
"""meddx's own code system for findings (its finding ids)."""
MEASURE_SYSTEM = "urn:meddx:measure"
UCUM = "http://unitsofmeasure.org"
DICOM_UID = "urn:dicom:uid"
_POINT_WORDS = {
    "calibration": "a calibration measured on labelled films",
    "trained head": "a trained head's threshold measured on labelled films",
    "user": "a threshold set by the user, not measured on any data",
    None: "none (the score is uncalibrated and never flagged)",
}


def _concept(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _probability(value: float) -> dict:
    return {"value": float(value), "unit": "probability (0-1)", "system": UCUM, "code": "1"}


def study_reference(study_uid: str) -> dict:
    """A logical reference to a DICOM study by its UID (FHIR's convention for DICOM UIDs)."""
    return {"type": "ImagingStudy", "identifier": {"system": DICOM_UID, "value": f"urn:oid:{study_uid}"}}


def _method(analysis: Analysis) -> dict:
    model = analysis.model
    words = f"meddx {__version__}; model {model.spec} @ {model.revision or 'unversioned'}"
    if analysis.scoring.probe is not None:
        words += f"; trained head {analysis.scoring.probe.spec} @ {analysis.scoring.probe.revision}"
    return {"text": f"{words}; scoring: {analysis.scoring.mode}"}


def _observation(finding: FindingResult, analysis: Analysis, study: dict | None) -> dict:
    components = [
        {
            "code": _concept(MEASURE_SYSTEM, "image_probability", "Image-only probability"),
            "valueQuantity": _probability(finding.image_probability),
        }
    ]
    if finding.threshold is not None:
        components.append(
            {
                "code": _concept(MEASURE_SYSTEM, "threshold", "Flagging threshold"),
                "valueQuantity": _probability(finding.threshold),
            }
        )
    point = _POINT_WORDS[finding.operating_point]
    resource = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [
            _concept("http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging")
        ],
        "code": _concept(FINDING_SYSTEM, finding.id, finding.label),
        "effectiveDateTime": analysis.created,
        "issued": analysis.created,
        "valueQuantity": _probability(finding.probability),
        "method": _method(analysis),
        "component": components,
        "note": [
            {
                "text": f"{'Flagged' if finding.flagged else 'Not flagged'}; operating point: {point}. "
                "A score is not a diagnosis."
            }
        ],
    }
    if finding.flagged:
        resource["interpretation"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "A",
                        "display": "Abnormal",
                    }
                ],
                "text": f"Flagged by meddx: image-only probability at or above the threshold ({point})",
            }
        ]
    if study is not None:
        resource["derivedFrom"] = [study]
    return resource


def _conclusion(analysis: Analysis) -> str:
    flagged = [f"{f.label} ({f.image_probability:.2f})" for f in analysis.flagged]
    head = f"Flagged: {', '.join(flagged)}." if flagged else "No finding flagged."
    return f"{head} {analysis.flagging.statement} {analysis.disclaimer}"


def build_bundle(analysis: Analysis) -> Bundle:
    """The Bundle for ``analysis``, built from fhir.resources models (which validate every element)."""
    study = study_reference(analysis.source.study_uid) if analysis.source is not None else None
    entries = []
    urls = []
    for finding in analysis.findings:
        url = f"urn:uuid:{uuid.uuid4()}"
        urls.append(url)
        observation = Observation.model_validate(_observation(finding, analysis, study))
        entries.append({"fullUrl": url, "resource": observation})
    report = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ],
                "text": "imaging",
            }
        ],
        "code": _concept("http://loinc.org", "18748-4", "Diagnostic imaging study"),
        "effectiveDateTime": analysis.created,
        "issued": analysis.created,
        "result": [{"reference": url} for url in urls],
        "conclusion": _conclusion(analysis),
    }
    if study is not None:
        report["imagingStudy"] = [study]
    entries.insert(
        0, {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": DiagnosticReport.model_validate(report)}
    )
    return Bundle.model_validate(
        {"resourceType": "Bundle", "type": "collection", "timestamp": analysis.created, "entry": entries}
    )


def bundle_json(analysis: Analysis) -> dict:
    """The Bundle as a JSON object."""
    return json.loads(build_bundle(analysis).model_dump_json(exclude_none=True))


def write_fhir(analysis: Analysis, path: str | Path) -> None:
    """Write the Bundle as JSON at ``path`` (an `InputError` if it cannot be written)."""
    try:
        Path(path).write_text(json.dumps(bundle_json(analysis), indent=2), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot write the FHIR bundle to {path} ({exc.strerror}).") from exc
