"""What to analyse: a folder (recursive), a CSV or Parquet manifest, or an ``hf:`` dataset, as a film list.

Each film is one item ``{"id", "index", "source", "path", "notes"}``: ``id`` is unique in the source and
is what a re-run uses to skip films already written; ``index`` is the film's position in the listing (the
row number of a manifest or dataset); ``source`` is what the output shows of where it came from (the path
relative to the folder, the path as the manifest gives it, or the dataset split); ``path`` is the file to
read ("" for a dataset row, read by its index).
Nothing is decoded here; a missing or unreadable file becomes an error row later, never a failed listing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from meddx.batch.upstream import (
    HF_PREFIX,
    IMAGE_SUFFIXES,
    PATH_COLUMNS,
    InputError,
    parse_hub_spec,
    read_csv,
)

ID_COLUMN = "id"
MANIFEST_SUFFIXES = {".csv": "CSV manifest", ".parquet": "Parquet manifest", ".pq": "Parquet manifest"}


@dataclass(frozen=True)
class HubRef:
    """A Hugging Face dataset split, re-opened by each decoding task to read its rows by index."""

    name: str
    revision: str | None
    split: str
    image_column: str


@dataclass(frozen=True)
class Source:
    """The films of one SOURCE argument.

    Attributes:
        kind: "folder", "CSV manifest", "Parquet manifest" or "Hub dataset".
        items: One dict per film (see the module docstring), in listing order.
        hub: For a Hub dataset, where decoding tasks read the images.
    """

    kind: str
    items: list[dict] = field(repr=False)
    hub: HubRef | None = None


def read_source(
    spec: str,
    *,
    notes_column: str | None = None,
    id_column: str | None = None,
    path_column: str | None = None,
    exclude: Path | None = None,
) -> Source:
    """List the films of a folder, manifest or ``hf:`` dataset.

    Args:
        spec: a folder, a ``.csv``/``.parquet`` manifest, or ``hf:NAME[@REVISION][:SPLIT]``.
        notes_column: manifest or dataset column holding clinical notes (never written to the output).
        id_column: column holding a unique film id (default: ``id`` when present, else the path or row).
        path_column: manifest column holding image paths (default: the first of `PATH_COLUMNS` present).
        exclude: a folder whose files are never listed (the output folder, when it lies inside SOURCE).

    Raises:
        InputError: the spec names nothing readable, a named column is missing, or ids repeat.
    """
    spec = (spec or "").strip()
    if spec.startswith(HF_PREFIX):
        return _from_hub(spec[len(HF_PREFIX) :], notes_column=notes_column, id_column=id_column)
    path = Path(spec).expanduser()
    if path.is_dir():
        if notes_column or id_column or path_column:
            raise InputError("--notes-column, --id-column and --path-column need a manifest, not a folder.")
        return _from_folder(path, exclude=exclude)
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if not path.is_file() or kind is None:
        raise InputError(
            f"SOURCE {spec!r} is not a folder, a .csv or .parquet manifest, or an 'hf:' dataset "
            "(e.g. hf:org/name:test)."
        )
    records = read_csv(path) if kind == "CSV manifest" else _read_parquet(path)
    return _from_records(
        records,
        kind=kind,
        base=path.parent,
        notes_column=notes_column,
        id_column=id_column,
        path_column=path_column,
    )


def _from_folder(root: Path, *, exclude: Path | None) -> Source:
    excluded = exclude.resolve() if exclude is not None else None
    items = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        name = relative.as_posix()
        items.append({"id": name, "index": len(items), "source": name, "path": str(path), "notes": None})
    if not items:
        raise InputError(f"Folder {root.name!r} holds no image files.")
    return Source("folder", items)


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path.name!r} as a Parquet file ({type(exc).__name__}).") from exc


def _column(columns: list[str], wanted: str | None, what: str, defaults: tuple[str, ...] = ()) -> str | None:
    """The column named ``wanted`` (must exist), else the first of ``defaults`` present (any case)."""
    lowered = {c.lower(): c for c in columns}
    if wanted:
        if wanted in columns:
            return wanted
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        raise InputError(f"The {what} column {wanted!r} is not in the data; it has: {', '.join(columns)}.")
    return next((lowered[name] for name in defaults if name in lowered), None)


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _check_unique(items: list[dict], kind: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise InputError(
                f"The {kind} names film {item['id']!r} twice; ids must be unique so that a re-run can skip "
                "what is done. Add an id column (--id-column)."
            )
        seen.add(item["id"])


def _from_records(
    records: list[dict],
    *,
    kind: str,
    base: Path,
    notes_column: str | None,
    id_column: str | None,
    path_column: str | None,
) -> Source:
    if not records:
        raise InputError(f"The {kind} has no rows.")
    columns = list(dict.fromkeys(c for r in records for c in r))
    paths = _column(columns, path_column, "path", PATH_COLUMNS)
    if paths is None:
        raise InputError(f"The {kind} needs an image path column named one of: {', '.join(PATH_COLUMNS)}.")
    ids = _column(columns, id_column, "id", (ID_COLUMN,))
    notes = _column(columns, notes_column, "notes")
    items = []
    for index, record in enumerate(records):
        raw = str(record.get(paths) or "").strip()
        path = Path(raw).expanduser() if raw else None
        if path is not None and not path.is_absolute():
            path = base / path
        film_id = _text(record.get(ids)) if ids else raw
        items.append(
            {
                "id": film_id or f"row {index + 1}",
                "index": index,
                "source": raw,
                "path": str(path) if path is not None else "",
                "notes": _text(record.get(notes)) if notes else None,
            }
        )
    _check_unique(items, kind)
    return Source(kind, items)


def _from_hub(rest: str, *, notes_column: str | None, id_column: str | None) -> Source:
    name, revision, split = parse_hub_spec(rest)
    dataset = open_hub_split(name, revision, split)
    import datasets

    features = dataset.features
    image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise InputError("The dataset has no image column (a datasets.Image feature).")
    columns = list(features)
    ids = _column(columns, id_column, "id", (ID_COLUMN,))
    notes = _column(columns, notes_column, "notes")
    id_values = dataset[ids] if ids else None
    note_values = dataset[notes] if notes else None
    items = [
        {
            "id": (_text(id_values[i]) or f"row {i + 1}") if id_values is not None else str(i),
            "index": i,
            "source": f"{HF_PREFIX}{rest}",
            "path": "",
            "notes": _text(note_values[i]) if note_values is not None else None,
        }
        for i in range(len(dataset))
    ]
    if not items:
        raise InputError("The dataset split has no rows.")
    _check_unique(items, "dataset")
    return Source("Hub dataset", items, HubRef(name, revision, split, image_column))


_OPEN: dict[tuple, object] = {}


def open_hub_split(name: str, revision: str | None, split: str):
    """`datasets.load_dataset`, once per process (decoding tasks re-use it); honours ``HF_HUB_OFFLINE``."""
    key = (name, revision, split)
    if key in _OPEN:
        return _OPEN[key]
    try:
        import datasets
    except ImportError as exc:
        raise InputError("Reading 'hf:' data needs the 'datasets' package: pip install datasets.") from exc
    try:
        dataset = datasets.load_dataset(name, revision=revision, split=split)
    except (ConnectionError, FileNotFoundError) as exc:
        raise InputError(
            f"Dataset {name!r} could not be loaded ({type(exc).__name__}). If it is on the Hub, check the "
            "name and your network, or fill the Hugging Face cache first (HF_HUB_OFFLINE=1 allows only "
            "cached datasets)."
        ) from exc
    except ValueError as exc:
        raise InputError(f"Dataset {name!r} has no split {split!r} ({exc}).") from exc
    _OPEN[key] = dataset
    return dataset
