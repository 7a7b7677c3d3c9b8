"""``scripts/seed_venv.py``: the runtime venvs share the dev venv's files without changing what they hold.

The runtime checks (``tests/test_runtime.py``) run it for real on ~120 distributions; these tests pin the
rules on small venv-shaped folders: only what pip resolved, at the same version, from an index, is linked;
scripts are copied with their own interpreter; ``--verify`` refuses a venv that holds more or other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "seed_venv.py"


def _venv(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    return folder


def _install(venv: Path, name: str, version: str, *, script: bool = False, editable: bool = False) -> None:
    """A distribution laid out as pip leaves it: package, dist-info with METADATA and RECORD, a script."""
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / name).mkdir()
    (site / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    files = [f"{name}/__init__.py", f"{info.name}/METADATA", f"{info.name}/RECORD"]
    if script:
        (venv / "bin" / name).write_text(f"#!{venv}/bin/python\nimport {name}\n")
        (venv / "bin" / name).chmod(0o755)
        files.append(f"../../../bin/{name}")
    if editable:
        (info / "direct_url.json").write_text('{"url": "file:///src", "dir_info": {"editable": true}}')
        files.append(f"{info.name}/direct_url.json")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def _report(path: Path, items: dict[str, str], direct: tuple[str, ...] = ()) -> Path:
    install = [{"metadata": {"name": n, "version": v}, "is_direct": n in direct} for n, v in items.items()]
    path.write_text(json.dumps({"install": install}))
    return path


def _run(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def venvs(tmp_path):
    source = _venv(tmp_path / "dev")
    _install(source, "alpha", "1.0", script=True)
    _install(source, "beta", "2.0")  # the new venv resolves 2.1: not linked
    _install(source, "gamma", "1.0", editable=True)  # `pip install -e`: not what an index serves
    _install(source, "delta", "1.0")  # the dev venv only: never linked
    return source, _venv(tmp_path / "new")


def test_links_only_resolved_same_version_index_installs(tmp_path, venvs):
    source, target = venvs
    report = _report(
        tmp_path / "r.json", {"alpha": "1.0", "beta": "2.1", "gamma": "1.0", "meddx": "0.1"}, ("meddx",)
    )
    proc = _run(report, source, target)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 distributions hard-linked" in proc.stderr
    new_site = target / "lib" / "python3.11" / "site-packages"
    linked = new_site / "alpha" / "__init__.py"
    assert (
        linked.stat().st_ino
        == (source / "lib" / "python3.11" / "site-packages" / "alpha" / "__init__.py").stat().st_ino
    )
    assert (new_site / "alpha-1.0.dist-info" / "RECORD").is_file()
    script = target / "bin" / "alpha"
    assert script.read_text().splitlines()[0] == f"#!{target}/bin/python"  # its own interpreter, a copy
    assert script.stat().st_ino != (source / "bin" / "alpha").stat().st_ino and script.stat().st_mode & 0o111
    assert not any((new_site / name).exists() for name in ("beta", "gamma", "delta"))


def test_verify_refuses_a_missing_a_different_or_an_extra_distribution(tmp_path, venvs):
    source, target = venvs
    report = _report(tmp_path / "r.json", {"alpha": "1.0", "beta": "2.1"})
    assert _run(report, source, target).returncode == 0
    missing = _run("--verify", report, target)
    assert missing.returncode != 0 and "beta None != 2.1" in missing.stderr
    _install(target, "beta", "2.1")
    assert _run("--verify", report, target).returncode == 0
    _install(target, "pip", "26.3")  # what `python -m venv` brings is allowed
    assert _run("--verify", report, target).returncode == 0
    _install(target, "delta", "1.0")
    extra = _run("--verify", report, target)
    assert extra.returncode != 0 and "extra ['delta']" in extra.stderr


def test_a_failed_link_leaves_no_half_distribution(tmp_path, venvs):
    source, target = venvs
    site = target / "lib" / "python3.11" / "site-packages"
    (site / "alpha-1.0.dist-info").write_text("a file where the dist-info folder goes")  # mkdir fails there
    report = _report(tmp_path / "r.json", {"alpha": "1.0"})
    proc = _run(report, source, target)
    assert proc.returncode == 0 and "stopped linking at alpha" in proc.stderr and "0 of 1" in proc.stderr
    assert not (site / "alpha" / "__init__.py").exists()  # linked first, then taken back
