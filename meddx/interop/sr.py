"""A DICOM Structured Report of one analysis: TID 1500 (Imaging Measurement Report) in a Comprehensive SR.

Made with highdicom from `meddx.result.Analysis` and its ``source`` (`meddx.io.study.DicomSource`):

- **Header.** The source's study: Study Instance UID, and the Patient and General Study module attributes
  (Type 1 and 2) copied from the source as the SR IOD requires, nothing else and nothing invented. The SR
  has its own series (`meddx.interop.identity`: UIDs derived from the source and the model, so storing the
  same result again replaces it), Content Qualification RESEARCH, PRELIMINARY and UNVERIFIED, and the
  source film in the Current Requested Procedure Evidence Sequence.
- **Observation context.** meddx as the observer device (TID 1004): name, manufacturer, the model spec and
  revision as model name; the same in each group's Algorithm Identification (TID 4019) with meddx's version.
- **One measurement group per finding (TID 1501)**, with the source image: the finding (code in the
  private scheme ``99MEDDX``, meaning its name), the probability (image and notes), the image-only
  probability and, where one exists, the threshold (UCUM ``1``); "Flagged" yes or no, and the operating
  point's source (calibration, trained head, user-set or none) as codes.
- **One planar ROI group per region (TID 1410)**: the region's box as a closed POLYLINE in the source
  image's pixel coordinates, its finding, its location in words (tracking identifier, which viewers show as
  the label) and the map's peak in it.
- **Qualitative Evaluations (TID 1500's own container)**: how flags were decided (calibrated or not), the
  scoring rule, and the disclaimer, as text.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from meddx import __version__
from meddx.errors import InputError
from meddx.interop import identity
from meddx.io.study import DicomSource
from meddx.result import Analysis, FindingResult

SCHEME = "99MEDDX"
"""The private coding scheme of meddx's findings and measures (DICOM reserves ``99`` for local schemes)."""
CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=SCHEME,
    name="meddx findings and measures",
    responsible_organization="meddx project",
)
PROCEDURE = Code("399208008", "SCT", "Plain chest X-ray")
UNITLESS = Code("1", "UCUM", "no units")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
QUALITATIVE = Code("C0034375", "UMLS", "Qualitative Evaluations")
PROBABILITY = Code("probability", SCHEME, "Probability (image and notes)")
IMAGE_PROBABILITY = Code("image_probability", SCHEME, "Image-only probability")
THRESHOLD = Code("threshold", SCHEME, "Flagging threshold")
FLAGGED = Code("flagged", SCHEME, "Flagged at an operating point")
OPERATING_POINT = Code("operating_point", SCHEME, "Operating point")
MAP_PEAK = Code("map_peak", SCHEME, "Attribution map peak in region")
FLAGGING = Code("flagging", SCHEME, "How findings were flagged")
SCORING = Code("scoring", SCHEME, "How the probabilities were made")
DISCLAIMER = Code("disclaimer", SCHEME, "Disclaimer")
OPERATING_POINTS = {
    "calibration": Code("calibration", SCHEME, "Calibration (measured on labelled films)"),
    "trained head": Code("trained_head", SCHEME, "Trained head (measured on labelled films)"),
    "user": Code("user", SCHEME, "Set by the user (not measured)"),
    None: Code("none", SCHEME, "None: uncalibrated score, never flagged"),
}
_SOURCE_NEEDED = (
    "A DICOM SR can only be written for a DICOM film that has valid Study, Series and SOP Instance UIDs; "
    "this input has none. Analyse the DICOM file itself."
)


def results_key_of(analysis: Analysis) -> str:
    """`meddx.interop.identity.results_key` of the model (and head) that made ``analysis``."""
    probe = analysis.scoring.probe
    return identity.results_key(
        analysis.model.spec, analysis.model.revision, probe and probe.spec, probe and probe.revision
    )


def require_source(analysis: Analysis) -> DicomSource:
    """The analysis's DICOM source, or an `InputError` that says a DICOM film is needed."""
    if analysis.source is None:
        raise InputError(_SOURCE_NEEDED)
    return analysis.source


def evidence_dataset(source: DicomSource) -> Dataset:
    """The source film as highdicom needs it for evidence and the header: the carried attributes only."""
    ds = Dataset()
    for keyword, value in source.attributes.items():
        setattr(ds, keyword, value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
        if keyword not in ds:  # Type 2: present, empty when the source has no value
            setattr(ds, keyword, None)
    for keyword in ("StudyID", "AccessionNumber", "ReferringPhysicianName"):
        if keyword not in ds:
            setattr(ds, keyword, None)
    return ds


def build_sr(analysis: Analysis) -> hd.sr.ComprehensiveSR:
    """The SR of ``analysis`` (see the module's description).

    Raises:
        InputError: the analysed film was not a DICOM with valid UIDs, or its header values cannot be
            written into an SR (the message names no value).
    """
    source = require_source(analysis)
    key = results_key_of(analysis)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid(key),
        name=identity.DEVICE_NAME,
        manufacturer_name=identity.MANUFACTURER,
        model_name=_model_words(analysis),
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    algorithm = hd.sr.AlgorithmIdentification(
        name=identity.DEVICE_NAME, version=__version__, parameters=[_model_words(analysis)]
    )
    groups: list = []
    for finding in analysis.findings:
        groups.append(_finding_group(finding, source, algorithm))
        for number, region in enumerate(finding.regions, 1):
            groups.append(_region_group(finding, number, region, source, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=PROCEDURE, imaging_measurements=groups
    )
    report[0].ContentSequence.append(_texts(analysis))
    try:
        return hd.sr.ComprehensiveSR(
            evidence=[evidence_dataset(source)],
            content=report[0],
            series_instance_uid=identity.sr_series_uid(source.study_uid, key),
            series_number=identity.SR_SERIES_NUMBER,
            sop_instance_uid=identity.sr_instance_uid(source.sop_instance_uid, key),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            is_complete=True,
            series_description=identity.SR_SERIES_DESCRIPTION,
            content_qualification="RESEARCH",
            coding_schemes=[CODING_SCHEME],
            software_versions=__version__,
            manufacturer_model_name=identity.DEVICE_NAME,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(
            "The DICOM header of this film has values that cannot be copied into a DICOM SR, so none was "
            "written; the analysis itself is unaffected."
        ) from exc


def _model_words(analysis: Analysis) -> str:
    model = analysis.model
    words = f"{model.spec} @ {model.revision or 'unversioned'}"
    probe = analysis.scoring.probe
    if probe is not None:
        words += f"; trained head {probe.spec} @ {probe.revision or 'unversioned'}"
    return words


def finding_code(finding: FindingResult) -> Code:
    """The finding in the private scheme: its id as the value, its name (at most 64 characters) as meaning."""
    return Code(finding.id, SCHEME, finding.label[:64])


def _measurement(name: Code, value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=UNITLESS)


def _finding_group(
    finding: FindingResult, source: DicomSource, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        _measurement(PROBABILITY, finding.probability),
        _measurement(IMAGE_PROBABILITY, finding.image_probability),
    ]
    if finding.threshold is not None:
        measurements.append(_measurement(THRESHOLD, finding.threshold))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.derived_uid("finding", source.sop_instance_uid, finding.id),
            identifier=f"{finding.label}: {'FLAGGED' if finding.flagged else 'not flagged'}",
        ),
        finding_type=finding_code(finding),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(FLAGGED, YES if finding.flagged else NO),
            hd.sr.QualitativeEvaluation(OPERATING_POINT, OPERATING_POINTS[finding.operating_point]),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup(source.sop_class_uid, source.sop_instance_uid)],
    )


def region_polyline(box: list[int]) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` (pixels, end-exclusive) as a closed polyline of (column, row) points in
    DICOM image coordinates (0, 0 is the top left corner of the top left pixel)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])


def _region_group(
    finding: FindingResult,
    number: int,
    region,
    source: DicomSource,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.derived_uid("region", source.sop_instance_uid, finding.id, str(number)),
            identifier=f"{finding.label} region {number}: {region.location}",
        ),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=region_polyline(region.box),
            source_image=hd.sr.SourceImageForRegion(source.sop_class_uid, source.sop_instance_uid),
        ),
        finding_type=finding_code(finding),
        algorithm_id=algorithm,
        measurements=[_measurement(MAP_PEAK, round(float(region.score), 4))],
    )


def _texts(analysis: Analysis) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: the flagging statement, the scoring rule, the
    disclaimer, as TEXT items."""
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    items = [
        (FLAGGING, analysis.flagging.statement),
        (SCORING, f"{analysis.scoring.mode}: {analysis.scoring.rule}"),
        (DISCLAIMER, f"Research output, not a cleared medical device. {analysis.disclaimer}"),
    ]
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=name, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
            for name, text in items
        ]
    )
    return container
