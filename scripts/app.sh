#!/usr/bin/env bash
# Set up .venv (first run only) and start the meddx web app. Extra arguments go to app.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh requirements.txt
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python app.py "$@"
