"""Hard-link into a new venv the packages pip is about to install that another venv already holds.

Usage: python seed_venv.py REPORT SOURCE_VENV TARGET_VENV
       python seed_venv.py --verify REPORT TARGET_VENV

REPORT is what ``pip install --dry-run --report REPORT ...`` wrote in TARGET_VENV: the exact set of
distributions pip resolved for the requirements, and nothing else. Each of them that SOURCE_VENV holds at
the same version, installed from an index (not editable, not a local path), has the files of its RECORD
hard-linked into TARGET_VENV, so the pip install that follows finds it satisfied and installs the rest.
The venv that results holds what a plain install would, file for file, without another 6 GB of torch and
CUDA wheels on disk: CI machines can be short of disk (a runtime check once failed there with ENOSPC).
Pip never rewrites an installed file in place (it removes and recreates), so the venvs stay independent.

``--verify`` then checks that TARGET_VENV holds exactly the report's distributions at the report's versions,
plus what ``python -m venv`` put there: the seeding can add nothing that requirements.txt does not bring.

Standard library only: it runs in the new venv's own interpreter. Prints one summary line to stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

# What `python -m venv` and `pip install --upgrade pip` put in a venv before any requirement.
BOOTSTRAP = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"seed_venv: expected one site-packages folder under {venv}, found {len(found)}")
    return found[0]


def resolved(report: Path, *, direct: bool = True) -> dict[str, str]:
    """Name -> version of every distribution the report says pip would install (``direct=False``: only
    those from an index or find-links, not a local path such as ``pip install .``)."""
    items = json.loads(report.read_text())["install"]
    return {
        canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in items
        if direct or not item.get("is_direct")
    }


def installed(site: Path) -> dict[str, metadata.Distribution]:
    dists = metadata.distributions(path=[str(site)])
    return {canonical(d.metadata["Name"]): d for d in dists if d.metadata["Name"]}  # not a broken one


def from_an_index(dist: metadata.Distribution) -> bool:
    """Installed from a wheel an index or find-links served, as pip would in the new venv (not `-e .`)."""
    direct = dist.read_text("direct_url.json")
    return direct is None and dist.read_text("RECORD") is not None


def link_one(dist: metadata.Distribution, source: Path, target: Path) -> int:
    """Hard-link ``dist``'s files from venv ``source`` into venv ``target``; scripts get their shebang
    rewritten (a copy), as pip writes them. All or nothing: on an error what was made is removed, so pip
    never finds half a distribution. Returns the bytes linked."""
    made: list[Path] = []
    try:
        for file in dist.files or []:
            path = Path(os.path.normpath(dist.locate_file(file)))
            if not path.is_file() or not path.is_relative_to(source):
                continue  # RECORD lists __pycache__ entries that may never have been written
            destination = target / path.relative_to(source)
            if destination.exists():
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.parent.name == "bin" and destination.parent.parent == target:
                old, new = (str(venv / "bin" / "python").encode() for venv in (source, target))
                destination.write_bytes(path.read_bytes().replace(old, new, 1))
                destination.chmod(path.stat().st_mode)
            else:
                os.link(path, destination)
            made.append(destination)
    except OSError:
        for destination in made:
            destination.unlink(missing_ok=True)
        raise
    return sum(p.stat().st_size for p in made)


def seed(report: Path, source: Path, target: Path) -> None:
    source, target = Path(os.path.abspath(source)), Path(os.path.abspath(target))
    wanted = resolved(report, direct=False)
    have = installed(site_packages(source))
    present = installed(site_packages(target))
    linked = count = 0
    for name, version in sorted(wanted.items()):
        dist = have.get(name)
        if name in present or dist is None or dist.version != version or not from_an_index(dist):
            continue
        try:
            linked += link_one(dist, source, target)
        except OSError as error:  # another file system, or no hard links: pip installs the rest as usual
            print(
                f"seed_venv: stopped linking at {name} ({error.strerror}); pip installs the rest",
                file=sys.stderr,
            )
            break
        count += 1
    print(
        f"seed_venv: {count} of {len(wanted)} distributions hard-linked from {source.name} "
        f"({linked / 1e9:.1f} GB not copied)",
        file=sys.stderr,
    )


def verify(report: Path, target: Path) -> None:
    wanted = resolved(report)
    have = {name: d.version for name, d in installed(site_packages(target)).items()}
    extra = sorted(set(have) - set(wanted) - BOOTSTRAP)
    wrong = sorted(f"{n} {have.get(n)} != {v}" for n, v in wanted.items() if have.get(n) != v)
    if extra or wrong:
        raise SystemExit(f"seed_venv: {target} is not what pip resolved: extra {extra}; differing {wrong}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--verify"] and len(args) == 3:
        verify(Path(args[1]), Path(args[2]))
    elif len(args) == 3:
        seed(Path(args[0]), Path(args[1]), Path(args[2]))
    else:
        raise SystemExit(__doc__)
