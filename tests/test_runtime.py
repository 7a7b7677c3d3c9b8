"""Runtime-only checks, outside the dev venv (``scripts/check-runtime.sh``).

A Hugging Face Space installs ``requirements.txt`` and nothing else, and a user gets what ``pip install .``
declares; every other test runs in the dev venv, where a missing runtime dependency can hide behind a dev
tool's (scipy came only with scikit-learn). The script builds cached venvs (``.venv-runtime``,
``.venv-wheel``: minutes the first time and when requirements.txt changes, seconds after) and checks them
through the entry points a user has: ``app.py`` with ``/analyze`` through ``gradio_client``, and
``python -m meddx analyze`` from the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.runtime, pytest.mark.slow, pytest.mark.timeout(2400)]


def _check(what: str) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-runtime.sh"), what],
        cwd=ROOT,
        env={**os.environ, "DEV_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=2300,
        check=False,
    )
    print(proc.stderr[-2000:])  # the script's summary, shown by pytest -rP or on failure
    output = proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"scripts/check-runtime.sh {what} failed:\n{output}"


def test_the_space_boots_from_requirements_txt_alone_and_answers_analyze():
    _check("space")


def test_the_installed_wheel_analyzes_outside_the_source_tree():
    _check("wheel")
