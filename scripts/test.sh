#!/usr/bin/env bash
# Set up .venv with the dev requirements and Debian's Chromium (first run only), then lint and run
# the whole test suite offline. Extra arguments go to pytest. The suite includes the runtime-only checks
# (tests/test_runtime.py runs scripts/check-runtime.sh: cached .venv-runtime and .venv-wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh requirements-dev.txt
if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests ..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# Debian's Orthanc with its DICOMweb plugin (the PACS round trip, tests/test_pacs.py) and the DICOM checkers
# the SR tests run (dcmtk's dsrdump, dicom3tools' dciodvfy).
if [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/bin/dciodvfy ] || [ ! -x /usr/bin/dsrdump ]; then
  echo "Installing Debian's orthanc, orthanc-dicomweb, dcmtk and dicom3tools for the PACS tests ..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb dcmtk dicom3tools >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check meddx tests scripts app.py
.venv/bin/ruff format --check meddx tests scripts app.py
exec .venv/bin/python -m pytest "$@"
