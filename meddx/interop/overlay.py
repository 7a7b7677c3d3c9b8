"""The top finding's attribution figure as a DICOM Secondary Capture in the film's study (highdicom).

The image is the figure ``analyze --overlays`` writes (`meddx.explain.figure`): the film with the map in a
perceptual colour map, a band above it naming the finding, its image-only score and the method, a colour
key, and the regions' numbered boxes. It goes into its own series ("meddx attribution overlay: research
output, not for diagnosis", series number 9902; UIDs derived as for the SR), with the Patient and General
Study attributes copied from the source as the SC IOD requires, the source's Patient Orientation (the
figure keeps the film's orientation; without one in the source no overlay is written, nothing is
invented), the source film in the Source Image Sequence, and Content Qualification RESEARCH.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from meddx import __version__
from meddx.errors import InputError
from meddx.interop import identity
from meddx.interop.sr import evidence_dataset, require_source, results_key_of
from meddx.result import Analysis


def top_mapped(analysis: Analysis) -> str:
    """The id of the first mapped finding (maps go to the most probable findings first)."""
    for finding_id in analysis.explanation.mapped:
        if finding_id in analysis.maps:
            return finding_id
    raise InputError("No finding was mapped, so there is no overlay to write; ask for at least one map.")


def build_overlay(analysis: Analysis, finding_id: str | None = None) -> hd.sc.SCImage:
    """The Secondary Capture of ``finding_id``'s figure (default: the top mapped finding).

    Raises:
        InputError: not a DICOM film with UIDs, no map, or the source has no Patient Orientation.
    """
    from meddx.explain.figure import FigureText, figure

    source = require_source(analysis)
    finding_id = finding_id or top_mapped(analysis)
    orientation = source.attributes.get("PatientOrientation")
    if not orientation:
        raise InputError(
            "The film has no Patient Orientation, which a Secondary Capture of it must repeat, so no overlay "
            "was written (meddx does not guess it)."
        )
    result = next(f for f in analysis.findings if f.id == finding_id)
    text = FigureText(result.label, result.image_probability, analysis.explanation.method)
    image = figure(analysis.preview, analysis.maps[finding_id].on_film(), text, result.regions)
    key = results_key_of(analysis)
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=evidence_dataset(source),
            pixel_array=image,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=identity.overlay_series_uid(source.study_uid, key),
            series_number=identity.OVERLAY_SERIES_NUMBER,
            sop_instance_uid=identity.overlay_instance_uid(source.sop_instance_uid, key),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            patient_orientation=tuple(orientation),
            series_description=identity.OVERLAY_SERIES_DESCRIPTION,
            content_qualification="RESEARCH",
            software_versions=__version__,
            manufacturer_model_name=identity.DEVICE_NAME,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(
            "The DICOM header of this film has values that cannot be copied into a Secondary Capture, so no "
            "overlay was written; the analysis itself is unaffected."
        ) from exc
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.sop_class_uid
    reference.ReferencedSOPInstanceUID = source.sop_instance_uid
    sc.SourceImageSequence = [reference]
    if analysis.image.body_part:  # the source's, when among the defined terms (`meddx.io.dicom`)
        sc.BodyPartExamined = analysis.image.body_part  # CHEST: unpaired, so no Laterality
    else:
        sc.Laterality = ""  # Type 2C: present and empty (unknown) when the body part is not known
    sc.ImageComments = (
        f"meddx {analysis.explanation.method} map for {result.label[:64]} (image-only score "
        f"{result.image_probability:.2f}): where the model's evidence lies, not a finding. Research output, "
        "not a diagnosis."
    )
    return sc
