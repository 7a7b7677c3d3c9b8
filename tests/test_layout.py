"""The package's shape, as DESIGN.md states it: one folder per stage, imports pointing downstream only,
Gradio only in ``meddx/app/``, the development tooling reached only lazily, and only by the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meddx"

# Flow order: a module may import modules of its own rank or lower, never higher.
RANKS = {
    "meddx": 0,
    "meddx.config": 0,
    "meddx.explain.methods": 0,  # method names and cards: data read by the settings, no model
    "meddx.device": 0,
    "meddx.errors": 0,
    "meddx.data": 0,
    "meddx.jsonable": 0,
    "meddx.io": 1,
    "meddx.model": 2,
    "meddx.notes": 3,
    "meddx.explain": 4,
    "meddx.anatomy": 4,  # lung fields; uses the view words of meddx.explain.regions
    "meddx.result": 5,
    "meddx.flagging": 6,  # operating points and flags: the last step before the pipeline assembles
    "meddx.pipeline": 6,
    "meddx.report": 7,
    "meddx.train": 7,
    "meddx.interop": 7,
    "meddx.app": 8,
    "meddx.cli": 8,
    "meddx.batch": 8,
    "meddx.__main__": 8,
    "meddx.dev": 9,
}


def _rank(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANKS:
            return RANKS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no place in the flow order (tests/test_layout.py RANKS)")


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported module, whether the import is at module level) for every import in the file."""
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` are not run
        if isinstance(node, ast.If):
            top.update(id(child) for child in node.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, id(node) in top) for alias in node.names)
    return out


def _is_dev(module: str) -> bool:
    """Whether a module is the development tooling (``meddx.dev``), not e.g. ``meddx.device``."""
    return module == "meddx.dev" or module.startswith("meddx.dev.")


def test_imports_point_downstream_only():
    wrong = []
    for name, tree in _modules().items():
        for imported, _ in _imports(tree):
            if not imported.startswith("meddx") or (_is_dev(imported) and name != "meddx.dev"):
                continue
            if _rank(imported) > _rank(name):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "upstream imports: " + "; ".join(wrong)


def test_the_dev_tooling_is_reached_only_lazily_and_only_by_the_cli():
    wrong = []
    for name, tree in _modules().items():
        if _is_dev(name):
            continue
        for imported, at_top in _imports(tree):
            if _is_dev(imported) and (at_top or _rank(name) < RANKS["meddx.cli"]):
                wrong.append(f"{name} imports {imported}{' at module level' if at_top else ''}")
    assert not wrong, "; ".join(wrong)


def test_only_the_app_imports_gradio():
    offenders = [
        name
        for name, tree in _modules().items()
        if not name.startswith("meddx.app")
        and not _is_dev(name)
        and any(imported.split(".")[0] in ("gradio", "gradio_client") for imported, _ in _imports(tree))
    ]
    assert not offenders
