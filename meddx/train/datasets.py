"""Labelled chest films for training and evaluating a head, read from a data spec.

A data spec is one of:

- a folder with one subfolder per class (``DATA/nodule/*.png``, ``DATA/no_finding/*.png``); each image is
  positive for its folder's label only;
- a ``.csv`` file, or a ``.jsonl`` file with one JSON object a line; each row names an image in a path
  column (``path``, ``image``, ``image_path``, ``file`` or ``filename``; relative paths are read from the
  file's folder) and gives its labels either in a ``labels`` field (a list, or a string separated by ``|``
  or ``,``) or as one column per label holding 0 or 1;
- ``hf:NAME[@REVISION][:SPLIT]``: a dataset loaded with `datasets.load_dataset` (a Hub id such as
  ``hf:org/name``, or a local dataset folder), with an image column and a ``ClassLabel``, list of
  ``ClassLabel``, ``labels`` string or 0/1 label columns; the split defaults to ``train``. The
  ``datasets`` package is needed only for this kind, and ``HF_HUB_OFFLINE=1`` is respected.

Label names map to finding ids through `Vocabulary.lookup` (ids, names and synonyms, case-insensitive);
unknown names become custom labels (`Vocabulary.custom`). A class or label meaning "no finding" (the
``no_finding`` finding, ``normal``, ``none``) is not a label of its own: it marks an image negative for
every label. In CSV/JSONL rows, a column counts as a label column when its name is a known finding (its
values must then be 0, 1 or blank, blank meaning 0; an uncertain ``-1`` is refused) or when every value is
0 or 1; other columns (ids, ages, views) are ignored.

Only counts per label and the kind of source are ever stored with a trained head; file names and local
paths are used to read images and to word error messages, nothing else.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io.sniff import IMAGE_SUFFIXES
from meddx.model.vocabulary import Finding, load_vocabulary

HF_PREFIX = "hf:"
PATH_COLUMNS = ("path", "image", "image_path", "file", "filename")
LABELS_COLUMN = "labels"
NO_FINDING_ID = "no_finding"
NO_FINDING_NAMES = {"no finding", "normal", "none"}
_POSITIVE = {"1", "1.0", "true"}
_NEGATIVE = {"0", "0.0", "false", ""}


@dataclass(frozen=True)
class LabelledImages:
    """Images with a 0/1 target per label.

    Attributes:
        kind: "image folder", "CSV", "JSONL" or "Hub dataset".
        description: What the data is, safe to store with a head: the kind, plus the dataset id for Hub
            datasets (never a local path or file name).
        findings: The labels, as vocabulary (or custom) findings, in column order of ``targets``.
        sources: Per image, its path or its encoded bytes (anything `meddx.io.load_study` reads).
        names: Per image, a name for error messages only.
        targets: (N, L) uint8 array, 1 where the image is positive for the label.
    """

    kind: str
    description: str
    findings: tuple[Finding, ...]
    sources: tuple[Path | bytes, ...]
    names: tuple[str, ...]
    targets: np.ndarray

    @property
    def labels(self) -> tuple[str, ...]:
        """The finding ids, in column order."""
        return tuple(f.id for f in self.findings)

    def __len__(self) -> int:
        return len(self.sources)

    def counts(self) -> dict[str, dict[str, int]]:
        """Positives and negatives per finding id."""
        positives = self.targets.sum(axis=0).tolist()
        return {
            f.id: {"positive": int(p), "negative": len(self) - int(p)}
            for f, p in zip(self.findings, positives, strict=True)
        }

    def select(self, labels: list[str]) -> LabelledImages:
        """Keep only these labels (names, ids or synonyms); images positive only for others become negatives.

        Raises:
            InputError: a label is not in the data.
        """
        vocabulary = load_vocabulary()
        columns = []
        for label in labels:
            finding = vocabulary.lookup(label) or vocabulary.custom(label)
            if finding.id not in self.labels:
                raise InputError(
                    f"Label {label!r} is not in the data; it has: {', '.join(self.labels) or 'none'}."
                )
            columns.append(self.labels.index(finding.id))
        columns = list(dict.fromkeys(columns))
        return replace(
            self,
            findings=tuple(self.findings[c] for c in columns),
            targets=self.targets[:, columns],
        )


def load_data(spec: str) -> LabelledImages:
    """Read a data spec (see the module docstring) into `LabelledImages`.

    Raises:
        InputError: the spec names nothing readable, rows are malformed, images are missing, or no labels
            are found. The message says what was wrong and what is accepted.
    """
    spec = (spec or "").strip()
    if spec.startswith(HF_PREFIX):
        return _from_hub(spec[len(HF_PREFIX) :])
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if not path.is_file():
        raise InputError(
            f"Data {spec!r} is not a folder, a file or an 'hf:' dataset. Give an image folder with one "
            "subfolder per class, a .csv or .jsonl file, or hf:org/name."
        )
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_records(_read_csv(path), kind="CSV", base=path.parent)
    if suffix in (".jsonl", ".ndjson"):
        return _from_records(_read_jsonl(path), kind="JSONL", base=path.parent)
    raise InputError(f"Data file {path.name!r}: use a .csv or .jsonl file, an image folder, or hf:org/name.")


def _is_no_finding(name: str) -> bool:
    key = " ".join(name.lower().replace("_", " ").split())
    finding = load_vocabulary().lookup(name)
    return key in NO_FINDING_NAMES or (finding is not None and finding.id == NO_FINDING_ID)


def _finding(name: str) -> Finding:
    vocabulary = load_vocabulary()
    return vocabulary.lookup(name) or vocabulary.custom(name)


class _LabelIndex:
    """Collects findings in order of first appearance and builds the target matrix."""

    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}
        self.rows: list[set[str]] = []

    def add(self, positive_names: Iterable[str]) -> None:
        ids = set()
        for name in positive_names:
            if _is_no_finding(name):
                continue
            finding = _finding(name)
            self.findings.setdefault(finding.id, finding)
            ids.add(finding.id)
        self.rows.append(ids)

    def declare(self, name: str) -> None:
        """Make a label known even if no image is positive for it (a 0/1 column)."""
        if not _is_no_finding(name):
            finding = _finding(name)
            self.findings.setdefault(finding.id, finding)

    def targets(self) -> np.ndarray:
        ids = list(self.findings)
        targets = np.zeros((len(self.rows), len(ids)), dtype=np.uint8)
        for row, positives in enumerate(self.rows):
            for finding_id in positives:
                targets[row, ids.index(finding_id)] = 1
        return targets


def _finish(
    kind: str, description: str, sources: list, names: list[str], index: _LabelIndex
) -> LabelledImages:
    if not sources:
        raise InputError(f"The {kind} data holds no images.")
    if not index.findings:
        raise InputError(
            f"The {kind} data has no labels other than 'no finding': at least one finding label is needed."
        )
    return LabelledImages(
        kind=kind,
        description=description,
        findings=tuple(index.findings.values()),
        sources=tuple(sources),
        names=tuple(names),
        targets=index.targets(),
    )


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _from_folder(root: Path) -> LabelledImages:
    index = _LabelIndex()
    sources: list[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(p for p in class_dir.iterdir() if _is_image(p)):
            sources.append(image)
            index.add([class_dir.name])
        index.declare(class_dir.name)
    if not sources:
        raise InputError(
            f"Folder {root.name!r} has no class subfolders with images. Put the images of each class in "
            "a subfolder named after it (e.g. nodule/, no_finding/)."
        )
    return _finish("image folder", "image folder", sources, [p.name for p in sources], index)


def _read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read {path.name!r} as a UTF-8 CSV file ({exc}).") from exc


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {path.name!r} as UTF-8 text ({exc}).") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path.name} line {number}: not valid JSON.") from None
        if not isinstance(record, dict):
            raise InputError(f"{path.name} line {number}: expected a JSON object.")
        records.append(record)
    return records


def _split_labels(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    if value is None:
        return []
    return [part.strip() for part in re.split(r"[|,]", str(value)) if part.strip()]


def _binary(value: object) -> bool | None:
    """True/False for a 0/1 cell (blank is 0), None for anything else."""
    text = "" if value is None else str(value).strip().lower()
    if text in _POSITIVE:
        return True
    if text in _NEGATIVE:
        return False
    return None


def _label_columns(records: list[dict], columns: list[str], skip: set[str]) -> list[str]:
    """Columns that hold labels: known finding names (strictly 0/1) and unknown names that are all 0/1."""
    chosen = []
    for column in columns:
        if column in skip:
            continue
        values = [r.get(column) for r in records]
        bad = next(((i, v) for i, v in enumerate(values, 1) if _binary(v) is None), None)
        if load_vocabulary().lookup(column) is not None:
            if bad is not None:
                raise InputError(
                    f"Label column {column!r} holds {bad[1]!r} in row {bad[0]}; label columns must hold 0 or "
                    "1 (or blank for 0). Map uncertain labels to 0 or 1 first."
                )
            chosen.append(column)
        elif bad is None:
            chosen.append(column)
    return chosen


def _path_column(columns: list[str], kind: str) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in PATH_COLUMNS:
        if name in lowered:
            return lowered[name]
    raise InputError(f"The {kind} data needs an image path column named one of: {', '.join(PATH_COLUMNS)}.")


def _from_records(records: list[dict], *, kind: str, base: Path) -> LabelledImages:
    """Rows with an image path and labels (a ``labels`` field or 0/1 columns)."""
    columns = list(dict.fromkeys(c for r in records for c in r))
    path_column = _path_column(columns, kind)
    sources: list[Path] = []
    for number, record in enumerate(records, 1):
        raw = str(record.get(path_column) or "").strip()
        if not raw:
            raise InputError(f"{kind} row {number}: the {path_column!r} column is empty.")
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise InputError(f"{kind} row {number}: image file {Path(raw).name!r} not found.")
        sources.append(path)
    index = _labels_from_records(records, columns, {path_column}, kind)
    return _finish(kind, kind, sources, [p.name for p in sources], index)


def _labels_from_records(records: list[dict], columns: list[str], skip: set[str], kind: str) -> _LabelIndex:
    index = _LabelIndex()
    lowered = {c.lower(): c for c in columns}
    if LABELS_COLUMN in lowered:
        for record in records:
            index.add(_split_labels(record.get(lowered[LABELS_COLUMN])))
        return index
    label_columns = _label_columns(records, columns, skip)
    if not label_columns:
        raise InputError(
            f"The {kind} data has no labels: add a 'labels' column (names separated by '|'), or one column "
            "per finding holding 0 or 1."
        )
    for column in label_columns:
        index.declare(column)
    for record in records:
        index.add([c for c in label_columns if _binary(record.get(c))])
    return index


def _parse_hub_spec(rest: str) -> tuple[str, str | None, str]:
    """``NAME[@REVISION][:SPLIT]`` -> (name, revision, split)."""
    name, split = rest, "train"
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail:
        name, split = head, tail
    name, _, revision = name.partition("@")
    if not name.strip():
        raise InputError("Give a dataset after 'hf:', e.g. hf:org/name or hf:org/name:validation.")
    return name.strip(), revision.strip() or None, split.strip() or "train"


def _from_hub(rest: str) -> LabelledImages:
    name, revision, split = _parse_hub_spec(rest)
    try:
        import datasets
    except ImportError as exc:
        raise InputError(
            "Reading 'hf:' data needs the 'datasets' package: pip install \"meddx[train]\" "
            "(or pip install -r requirements-train.txt)."
        ) from exc
    try:
        dataset = datasets.load_dataset(name, revision=revision, split=split)
    except (ConnectionError, FileNotFoundError) as exc:
        raise InputError(
            f"Dataset {name!r} could not be loaded ({type(exc).__name__}). If it is on the Hub, check the "
            "name and your network, or fill the Hugging Face cache on a connected machine first "
            "(HF_HUB_OFFLINE=1 allows only cached datasets)."
        ) from exc
    except ValueError as exc:
        raise InputError(f"Dataset {name!r} has no split {split!r} ({exc}).") from exc
    is_local = Path(name).expanduser().exists()
    return from_hf_dataset(dataset, description="Hub dataset" if is_local else f"Hub dataset {name}")


def from_hf_dataset(dataset, *, description: str = "Hub dataset") -> LabelledImages:
    """Labelled images from a `datasets.Dataset` with one image column and label columns.

    Labels come from a ``ClassLabel`` column (one label per image), a list of ``ClassLabel`` (several), a
    ``labels`` string column, or 0/1 columns, in that order of preference.
    """
    import datasets

    features = dataset.features
    image_columns = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if not image_columns:
        raise InputError("The dataset has no image column (a datasets.Image feature).")
    image_column = image_columns[0]
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    class_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    list_column = next(
        (
            c
            for c, f in features.items()
            if isinstance(f, datasets.List) and isinstance(f.feature, datasets.ClassLabel)
        ),
        None,
    )
    records = []
    for row in raw:
        record = {k: v for k, v in row.items() if k != image_column}
        if class_column is not None:
            record = {LABELS_COLUMN: [features[class_column].int2str(row[class_column])]}
        elif list_column is not None:
            record = {LABELS_COLUMN: [features[list_column].feature.int2str(i) for i in row[list_column]]}
        records.append(record)
    sources = [image["bytes"] or Path(image["path"]) for image in raw[image_column]]
    names = [Path(image["path"] or f"row {i}").name for i, image in enumerate(raw[image_column], 1)]
    columns = list(dict.fromkeys(c for r in records for c in r))
    index = _labels_from_records(records, columns, set(), "Hub dataset")
    return _finish("Hub dataset", description, sources, names, index)
