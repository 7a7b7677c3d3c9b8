"""Helpers shared by the tests (fixtures live in ``conftest.py``): real DICOM files with planted
identifiers, the live app on a free port, small films, a labelled film folder, a fake Hub API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from meddx.dev.tiny import synthetic_film

# --- DICOM files --------------------------------------------------------------------------------------

PLANTED_IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN98765",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC55555",
    "InstitutionName": "St Example Hospital",
}


def chest_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int = 1,
    modality: str = "DX",
    sop_class: UID = DigitalXRayImageStorageForPresentation,
    identifiers: dict[str, str] = PLANTED_IDENTIFIERS,
    **tags: object,
) -> Dataset:
    """An uncompressed PA chest data set holding ``pixels`` (colour when the last axis is 3), identifiers
    planted, and any further ``tags``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword, value in identifiers.items():
        setattr(ds, keyword, value)
    ds.Modality = modality
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    samples = 3 if pixels.ndim == (4 if frames > 1 else 3) else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def write_dicom(path: Path, pixels: np.ndarray | None = None, *, view_position: str = "PA") -> Path:
    """A 12-bit MONOCHROME2 CR chest film with planted identifiers; a bright square in the middle."""
    if pixels is None:
        pixels = np.full((256, 224), 600, np.uint16)
        pixels[96:160, 80:144] = 3500
    ds = chest_dataset(
        pixels.astype(np.uint16), bits_stored=12, modality="CR", sop_class=ComputedRadiographyImageStorage
    )
    ds.ViewPosition = view_position
    ds.save_as(path, enforce_file_format=True)
    return path


# --- the live app -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, at any depth."""
    return [p for p in folder.rglob("*") if p.is_file()]


@contextmanager
def running_app(settings, gradio_tmp: Path) -> Iterator[str]:
    """Build and launch the meddx app on a free port with Gradio's files in ``gradio_tmp``; yield its URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
        from meddx.app.page import build_demo, launch_kwargs, queue_kwargs

        demo = build_demo(settings).queue(**queue_kwargs())
        _, url, _ = demo.launch(
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=free_port(),
            quiet=True,
            **launch_kwargs(settings),
        )
        try:
            yield url
        finally:
            demo.close()


API_TIMEOUT_S = 120
"""How long a test's `gradio_client` waits for the server to answer one HTTP call (an upload, joining the
queue). gradio_client passes no timeout to httpx, whose default is 5 s: on a loaded 2-core CI machine, where
this process runs the server and every client, one stall past that fails a request before it is analysed."""


def api_client(url: str):
    """A `gradio_client.Client` for the live app at ``url``, patient with a busy machine (`API_TIMEOUT_S`)."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": API_TIMEOUT_S})


def write_png(path: Path) -> Path:
    """A small synthetic grayscale film: dark field, one bright rectangle."""
    film = np.full((256, 224), 60, np.uint8)
    film[80:170, 60:160] = 200
    Image.fromarray(film).save(path)
    return path


# --- labelled films and the Hub ------------------------------------------------------------------------


def write_film_folder(root: Path, *, positives: int, negatives: int, seed: int) -> Path:
    """An image folder of 96-px synthetic films: ``nodule/`` (with a blob) and ``no_finding/``."""
    rng = np.random.default_rng(seed)
    for index in range(positives + negatives):
        blob = index < positives
        folder = root / ("nodule" if blob else "no_finding")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_film(rng, size=96, blob=blob).pixels).save(folder / f"film_{index:03d}.png")
    return root


class FakeHubApi:
    """Records what `publish_head` asks of `huggingface_hub.HfApi`; never touches the network."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []

    def create_repo(self, repo_id: str, **kwargs) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs) -> None:
        self.calls.append(("upload_folder", kwargs))
        self.uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())


class FakeDatasetApi:
    """Records what `huggingface_hub.CommitScheduler` asks of `HfApi`; never touches the network."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {}

    def create_repo(self, repo_id: str, **kwargs):
        from huggingface_hub import RepoUrl

        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_commit(self, **kwargs):
        self.calls.append(("create_commit", kwargs))
        for operation in kwargs["operations"]:
            self.files[operation.path_in_repo] = operation.path_or_fileobj.read()

    def run_as_future(self, function, *args, **kwargs):
        from concurrent.futures import Future

        future = Future()
        future.set_result(function(*args, **kwargs))
        return future


# --- calibrations ---------------------------------------------------------------------------------------


def write_calibration(folder: Path, model_dir: Path, thresholds: dict[str, float | None]) -> Path:
    """A calibration folder for the model in ``model_dir`` written by hand: identity scaling (calibrated
    = zero-shot) and the given threshold per vocabulary finding id (None: calibrated, no threshold)."""
    from meddx.model.calibration import prompts_digest, save_calibration
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity
    from meddx.model.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    entry = {
        "custom": False,
        "positives": 40,
        "negatives": 60,
        "scale": 1.0,
        "bias": 0.0,
        "sensitivity": None,
        "sensitivity_ci": None,
        "specificity": None,
        "specificity_ci": None,
        "auroc": None,
        "ece_before": None,
        "ece_after": None,
        "note": "",
    }
    findings = {
        fid: {
            **entry,
            "label": vocabulary.finding(fid).name,
            "prompts_sha256": prompts_digest(vocabulary.finding(fid)),
            "threshold": threshold,
        }
        for fid, threshold in thresholds.items()
    }
    metadata = {
        "format": "meddx-zero-shot-calibration",
        "format_version": 1,
        "encoder": encoder_identity(load_encoder(f"local-dir:{model_dir}")).to_dict(),
        "target_sensitivity": 0.9,
        "min_positives": 20,
        "findings": findings,
        "calibration_rule": "identity (written by a test)",
        "threshold_rule": "set by a test",
        "interval_rule": "none",
        "ece_rule": "none",
        "data": {"description": "test data", "images": 100, "counts": {}},
        "created": "2025-01-01T00:00:00+00:00",
        "meddx_version": "test",
    }
    return save_calibration(metadata, folder)


def wait_until_ready(page) -> None:
    """Gradio loads each component's code on demand: upload only once the upload area itself has rendered,
    or the file can reach an input that nothing listens to yet. (Not "networkidle": the page keeps a
    heartbeat stream open, so that closing it forgets the film at once.)"""
    page.wait_for_load_state("load")
    page.get_by_text("Click to Upload").first.wait_for()
    page.locator("#meddx-film input[type=file]").wait_for(state="attached")
    page.wait_for_function("() => document.querySelectorAll('.pending, .generating').length === 0")
    page.wait_for_timeout(500)


# --- The page's Analyze button, by hand -----------------------------------------------------------------


def page_analyze(url: str, film: Path, notes: str, *, maps: int = 2, timeout: float = 120) -> dict:
    """The page's Analyze button as the browser sends it: upload the film, join the queue with the page
    event's inputs in its own order (JSON with escapes, as a browser's ``JSON.stringify`` writes it, so that
    lone surrogates can be sent), read the event stream; the completed message."""
    import json
    import uuid

    import httpx

    from meddx.model.vocabulary import load_vocabulary

    session = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=timeout) as http:
        dependencies = {d["api_name"]: d for d in http.get("config").json()["dependencies"]}
        dependency = dependencies["analyze_for_page"]
        uploaded = http.post("gradio_api/upload", files={"files": (film.name, film.read_bytes())}).json()[0]
        data = {"path": uploaded, "orig_name": film.name, "meta": {"_type": "gradio.FileData"}}
        findings = [f.id for f in load_vocabulary().findings]
        values = [data, notes, findings, "", "zero-shot", "gradcam", maps, 0]  # /analyze's parameter order
        by_component = dict(zip(dependencies["analyze"]["inputs"], values, strict=True))
        body = {
            "data": [by_component[component] for component in dependency["inputs"]],  # the page's own order
            "event_data": None,
            "fn_index": dependency["id"],
            "trigger_id": dependency["targets"][0][0],
            "session_hash": session,
        }
        headers = {"content-type": "application/json"}
        http.post("gradio_api/queue/join", content=json.dumps(body), headers=headers).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event stream ended without a result")
