"""DICOM SR and FHIR written by ``analyze --dicom-sr/--fhir`` from a generated film with planted identifiers:
re-read with pydicom and highdicom, checked by dcmtk's ``dsrdump`` and dicom3tools' ``dciodvfy`` where
installed, and the FHIR bundle re-validated with fhir.resources."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid

from meddx.cli.main import main
from meddx.errors import EXIT_INPUT
from meddx.interop.sr import region_polyline
from meddx.io import load_study
from tests.helpers import PLANTED_IDENTIFIERS, write_dicom

PLANTED = [*PLANTED_IDENTIFIERS.values(), "Doe", "Jane"]


@pytest.fixture
def film(tmp_path) -> Path:
    path = write_dicom(tmp_path / "film.dcm")
    ds = dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.PatientSex = "20240105", "101500", "F"
    ds.PatientOrientation = ["L", "F"]
    ds.save_as(path, enforce_file_format=True)
    return path


def _analyze(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["analyze", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def _groups(sr) -> list:
    root = sr.ContentSequence
    measurements = next(i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    return list(measurements.ContentSequence)


def test_sr_and_fhir_from_a_dicom_film(film, tmp_path, tiny_model_dir, capsys) -> None:
    sr_path, fhir_path, sc_path = tmp_path / "out.dcm", tmp_path / "out.json", tmp_path / "overlay.dcm"
    status, out, err = _analyze(
        capsys,
        str(film),
        "--model",
        f"local-dir:{tiny_model_dir}",
        "--threshold",
        "0.3",
        "--json",
        "--dicom-sr",
        str(sr_path),
        "--fhir",
        str(fhir_path),
        "--overlay-sc",
        str(sc_path),
    )
    assert status == 0, err
    result = json.loads(out)
    source = dcmread(film)

    sr = hd.sr.ComprehensiveSR.from_dataset(dcmread(sr_path))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.Modality == "SR"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    # The patient and study attributes the SR IOD requires, copied from the source; nothing else.
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        assert str(sr[keyword].value) == str(source[keyword].value)
    assert "InstitutionName" not in sr
    assert (sr.ContentQualification, sr.PreliminaryFlag, sr.VerificationFlag) == (
        "RESEARCH",
        "PRELIMINARY",
        "UNVERIFIED",
    )
    groups = _groups(sr)
    regions = [r for f in result["findings"] for r in f["regions"]]
    assert len(groups) == len(result["findings"]) + len(regions) and regions
    boxes = []
    for group in groups:
        for item in group.ContentSequence:
            if item.ValueType == "SCOORD":
                boxes.append(np.asarray(item.GraphicData, float).reshape(-1, 2))
                image = item.ContentSequence[0].ReferencedSOPSequence[0]
                assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert np.allclose(boxes[0], region_polyline(regions[0]["box"]))
    flagged = [f for f in result["findings"] if f["flagged"]]
    texts = " ".join(str(i.TextValue) for i in sr.ContentSequence[-1].ContentSequence)
    assert "not a diagnosis" in texts and "set by the user" in texts
    if shutil.which("dsrdump"):
        dump = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True)
        assert dump.returncode == 0 and "Imaging Measurement Report" in dump.stdout
        assert "rror" not in dump.stderr, dump.stderr
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", str(sr_path)], capture_output=True, text=True)
        errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
        assert not errors, checked.stderr

    sc = dcmread(sc_path)
    assert sc.SOPClassUID.name == "Secondary Capture Image Storage" and sc.Modality == "OT"
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SeriesInstanceUID != sr.SeriesInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert list(sc.PatientOrientation) == ["L", "F"] and sc.PhotometricInterpretation == "RGB"
    assert sc.Columns == source.Columns and sc.Rows > source.Rows  # the film under a caption band
    assert str(sc.PatientName) == str(source.PatientName) and "InstitutionName" not in sc
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", str(sc_path)], capture_output=True, text=True)
        assert not [line for line in checked.stderr.splitlines() if line.startswith("Error")], checked.stderr

    text = fhir_path.read_text(encoding="utf-8")
    bundle = Bundle.model_validate_json(text)
    report = bundle.entry[0].resource
    assert report.__resource_type__ == "DiagnosticReport" and report.status == "preliminary"
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{source.StudyInstanceUID}"
    assert "not a diagnosis" in report.conclusion
    observations = [e.resource for e in bundle.entry[1:]]
    assert len(observations) == len(result["findings"]) == len(report.result)
    by_code = {o.code.coding[0].code: o for o in observations}
    for finding in result["findings"]:
        observation = by_code[finding["id"]]
        assert float(observation.valueQuantity.value) == pytest.approx(finding["probability"])
        assert bool(observation.interpretation) == finding["flagged"]
        assert observation.derivedFrom[0].identifier.value == f"urn:oid:{source.StudyInstanceUID}"
        assert "meddx" in observation.method.text
    assert flagged
    for value in [*PLANTED, str(source.SeriesInstanceUID), str(source.SOPInstanceUID)]:
        assert value not in text
    for value in [*PLANTED, str(source.StudyInstanceUID)]:
        assert value not in out and value not in err


def test_sr_needs_a_dicom_film_and_fhir_does_not(tmp_path, tiny_model_dir, capsys) -> None:
    png = tmp_path / "film.png"
    Image.fromarray(np.tile(np.arange(128, dtype=np.uint8), (128, 1))).save(png)
    model = f"local-dir:{tiny_model_dir}"
    status, _, err = _analyze(capsys, str(png), "--model", model, "--dicom-sr", str(tmp_path / "x.dcm"))
    assert status == EXIT_INPUT and "DICOM SR can only be written for a DICOM film" in err
    assert "Traceback" not in err and not (tmp_path / "x.dcm").exists()
    status, _, err = _analyze(capsys, str(png), "--model", model, "--fhir", str(tmp_path / "x.json"))
    assert status == 0, err
    report = Bundle.model_validate_json((tmp_path / "x.json").read_text()).entry[0].resource
    assert report.imagingStudy is None
    status, _, err = _analyze(
        capsys, str(png), str(png), "--model", model, "--fhir", str(tmp_path / "y.json")
    )
    assert status == EXIT_INPUT and "single film" in err


def test_an_overlay_needs_the_films_patient_orientation(tmp_path, tiny_model_dir, capsys) -> None:
    path = write_dicom(tmp_path / "film.dcm")
    ds = dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "overlay.dcm"
    status, _, err = _analyze(
        capsys, str(path), "--model", f"local-dir:{tiny_model_dir}", "--overlay-sc", str(out)
    )
    assert status == EXIT_INPUT and "no Patient Orientation" in err and not out.exists()


def test_the_source_references_stay_out_of_reprs_and_results(film) -> None:
    study = load_study(film)
    source = dcmread(film)
    assert study.source is not None and study.source.study_uid == source.StudyInstanceUID
    text = repr(study) + repr(study.source) + json.dumps(study.info.to_dict())
    for value in [*PLANTED, str(source.StudyInstanceUID), str(source.SOPInstanceUID)]:
        assert value not in text


def test_a_film_without_uids_has_no_source(film) -> None:
    ds = dcmread(film)
    del ds.StudyInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert load_study(buffer.getvalue()).source is None
