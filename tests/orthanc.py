"""A real Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) for the tests: a temporary storage folder,
a generated configuration enabling the DICOMweb plugin, a free HTTP port; stopped by its PID.

Orthanc 1.10 (Debian bookworm) has no option to bind one address: it is started with its DICOM server off
(no DICOM port at all) and ``RemoteAccessAllowed`` false, so it answers only clients on this machine, and
every request the tests make goes to 127.0.0.1.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.helpers import free_port

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*")


def dicomweb_plugin() -> str | None:
    """The DICOMweb plugin's shared library from the Debian package, if installed."""
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def available() -> bool:
    return Path(ORTHANC).exists() and dicomweb_plugin() is not None


@contextmanager
def running_orthanc(folder: Path) -> Iterator[str]:
    """Start Orthanc with its storage and configuration in ``folder``; yield its REST root
    (``http://127.0.0.1:PORT``); stop it by its PID at the end."""
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    config = {
        "Name": "meddx-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()  # by its PID: this Popen's process only
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(storage, ignore_errors=True)


def upload(url: str, data: bytes) -> None:
    """Store one DICOM file in Orthanc through its REST API."""
    answer = requests.post(f"{url}/instances", data=data, timeout=30)
    answer.raise_for_status()
