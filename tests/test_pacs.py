"""The DICOMweb round trip against a real Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``): films with
planted identifiers uploaded, ``python -m meddx pacs`` run twice, SRs checked where they land."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

from meddx.errors import EXIT_INPUT
from meddx.interop import identity
from tests.helpers import PLANTED_IDENTIFIERS, chest_dataset
from tests.orthanc import available, running_orthanc, upload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="Debian's orthanc and orthanc-dicomweb are not installed"),
]
ROOT = Path(__file__).resolve().parents[1]
PLANTED = [*PLANTED_IDENTIFIERS.values(), "Doe", "Jane", "MRN98765", "ACC55555", "19610203"]


def film(
    study: str, series: str, *, modality: str = "CR", body_part: str = "CHEST", side: int = 256
) -> bytes:
    """A 12-bit chest film with identifiers planted, in ``study`` and ``series``."""
    pixels = np.full((side, side), 700, np.uint16)
    pixels[side // 3 : side // 2, side // 4 : side // 2] = 3300
    sop_class = (
        ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation
    )
    ds = chest_dataset(pixels, bits_stored=12, modality=modality, sop_class=sop_class)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.BodyPartExamined = body_part
    ds.PatientOrientation = ["L", "F"]
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.PatientSex = "20240105", "101500", "S77", "F"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def run_pacs(url: str, model: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDDX_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "meddx",
            "pacs",
            "--url",
            f"{url}/dicom-web",
            "--model",
            f"local-dir:{model}",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )


def sr_instances(client, study: str, key: str) -> list:
    series = identity.sr_series_uid(study, key)
    found = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    return [client.retrieve_instance(study, series, item["00080018"]["Value"][0]) for item in found]


def test_round_trip_stores_srs_in_their_studies_skips_on_rerun_and_reports_a_bad_film(
    tiny_model_dir, tmp_path
) -> None:
    from dicomweb_client.api import DICOMwebClient

    study_a, study_b = generate_uid(), generate_uid()
    series_a, series_b, series_hand = generate_uid(), generate_uid(), generate_uid()
    with running_orthanc(tmp_path / "orthanc") as url:
        sources = {
            "a1": film(study_a, series_a),
            "a2": film(study_a, series_a),
            "b1": film(study_b, series_b, modality="DX"),
            "bad": film(study_b, series_b, modality="DX", side=16),  # too small: meddx refuses it
            "hand": film(study_b, series_hand, body_part="HAND"),  # not a chest film: never queried
        }
        for data in sources.values():
            upload(url, data)
        sop = {name: dcmread(io.BytesIO(data)).SOPInstanceUID for name, data in sources.items()}

        first = run_pacs(url, tiny_model_dir, "--store-results", "--overlay")
        assert first.returncode == EXIT_INPUT, first.stderr[-3000:]  # one film failed, the rest were done
        summary = json.loads(first.stdout)["summary"]
        key = json.loads(first.stdout)["results_key"]
        assert summary | {"failures": None} == {
            "found": 4,
            "analysed": 3,
            "stored": 3,
            "skipped": 0,
            "failed": 1,
            "failures": None,
        }
        assert sop["bad"] in summary["failures"][0] and "pixels" in summary["failures"][0]
        assert sop["hand"] not in first.stderr

        client = DICOMwebClient(f"{url}/dicom-web")
        by_study = {study_a: sr_instances(client, study_a, key), study_b: sr_instances(client, study_b, key)}
        assert [len(by_study[study_a]), len(by_study[study_b])] == [2, 1]
        overlays = client.search_for_instances(
            study_instance_uid=study_a, series_instance_uid=identity.overlay_series_uid(study_a, key)
        )
        assert len(overlays) == 2 and overlays[0]["00080060"]["Value"] == ["OT"]
        for study, srs in by_study.items():
            for ds in srs:
                sr = hd.sr.ComprehensiveSR.from_dataset(ds)
                assert sr.StudyInstanceUID == study and sr.Modality == "SR"
                evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
                referenced = (
                    evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                )
                assert referenced in {sop["a1"], sop["a2"], sop["b1"]}
                assert str(sr.PatientName) == "Doe^Jane"  # copied from the source, as the SR IOD requires
                assert "InstitutionName" not in sr  # not required: not copied
                assert sr.ContentQualification == "RESEARCH"
        if shutil.which("dciodvfy"):
            path = tmp_path / "stored-sr.dcm"
            by_study[study_a][0].save_as(path, enforce_file_format=True)
            out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True).stderr
            assert not [line for line in out.splitlines() if line.startswith("Error")], out

        token = tmp_path / "token"
        token.write_text("bearer-secret-42\n")
        again = run_pacs(
            url,
            tiny_model_dir,
            "--store-results",
            "--study",
            study_a,
            "--token-file",
            str(token),
            "--header",
            "X-Api-Key: header-secret-43",
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["summary"] | {"failures": None} == {
            "found": 2,
            "analysed": 0,
            "stored": 0,
            "skipped": 2,
            "failed": 0,
            "failures": None,
        }
        assert len(sr_instances(client, study_a, key)) == 2

        for output in (first.stdout, first.stderr, again.stdout, again.stderr):
            for value in [*PLANTED, "secret-42", "secret-43"]:
                assert value not in output


def test_unreachable_server_is_one_line(tiny_model_dir) -> None:
    from tests.helpers import free_port

    result = run_pacs(f"http://user:secret@127.0.0.1:{free_port()}", tiny_model_dir)
    assert result.returncode != 0
    assert "Cannot reach the DICOMweb server at http://127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
