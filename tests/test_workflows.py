"""The GitHub Actions workflows: they parse, have the agreed shape, and pass actionlint where it is installed.

Debian 12 has no ``actionlint`` package (and its PyPI wrapper downloads a binary), so the lint check runs only
where an ``actionlint`` executable is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def _load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the bare key `on` as True
    return workflow


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_runs_the_test_script_with_python_311():
    workflow = _load("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert "3.11" in job["container"]
    assert job["steps"][0]["uses"].startswith("actions/checkout@")
    assert "bash scripts/test.sh" in _runs(job)


def test_deploy_runs_on_main_and_skips_cleanly_without_a_token():
    workflow = _load("deploy.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert job["env"]["HF_SPACE"] == "${{ vars.HF_SPACE }}"
    guard, *rest = job["steps"]
    assert 'if [ -z "$HF_TOKEN" ]' in guard["run"] and "::notice" in guard["run"]
    assert "deploy=false" in guard["run"] and "exit 1" not in guard["run"].split("elif")[0]
    assert all(step.get("if") == "steps.guard.outputs.deploy == 'true'" for step in rest)


def test_deploy_uploads_only_what_the_space_needs():
    (job,) = _load("deploy.yml")["jobs"].values()
    script = _runs(job)
    assert "cp app.py requirements.txt README.md space/" in script
    assert "cp -r meddx space/meddx" in script
    assert "LICENSE" in script
    upload = next(step["run"] for step in job["steps"] if "hf upload" in step.get("run", ""))
    assert '"$HF_SPACE" space .' in upload and "--repo-type space" in upload
    for unwanted in ("tests", "scripts", ".github", "cp -r . "):
        assert unwanted not in script


def test_the_guard_skips_without_a_token_and_fails_without_a_space(tmp_path):
    (job,) = _load("deploy.yml")["jobs"].values()
    guard = job["steps"][0]["run"]

    def run(**env: str) -> subprocess.CompletedProcess:
        output = tmp_path / "output"
        output.write_text("")
        return subprocess.run(
            ["bash", "-c", guard],
            env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), **env},
            capture_output=True,
            text=True,
            check=False,
        )

    skipped = run(HF_TOKEN="", HF_SPACE="")
    assert skipped.returncode == 0 and "Deploy skipped" in skipped.stdout
    assert (tmp_path / "output").read_text().strip() == "deploy=false"
    assert run(HF_TOKEN="hf_x", HF_SPACE="").returncode == 1
    ready = run(HF_TOKEN="hf_x", HF_SPACE="owner/meddx")
    assert ready.returncode == 0 and (tmp_path / "output").read_text().strip() == "deploy=true"


@pytest.mark.skipif(
    shutil.which("actionlint") is None, reason="actionlint is not installed (not in Debian 12)"
)
def test_actionlint_accepts_both_workflows():
    result = subprocess.run(
        ["actionlint", str(WORKFLOWS / "ci.yml"), str(WORKFLOWS / "deploy.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
