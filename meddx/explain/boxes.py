"""Expert boxes of public chest X-ray sets, read into one shape: `AnnotatedFilm`s of `Box`es.

Three layouts (``read_boxes``; ``"auto"`` tells them apart by content):

- **coco**: a COCO detection JSON (TBX11K): ``images[] {id, file_name, width, height}``, ``categories[]
  {id, name}``, ``annotations[] {image_id, category_id, bbox: [x, y, w, h]}``.
- **nih**: ChestX-ray14's ``BBox_List_2017.csv``: ``Image Index, Finding Label, Bbox [x, y, w, h]`` (the
  header splits the last name over four columns; extra empty columns are ignored).
- **rsna**: the RSNA Pneumonia challenge's ``stage_2_train_labels.csv``: ``patientId, x, y, width, height,
  Target``; rows with Target 0 have no box (the film is read as negative and skipped).

Coordinates are pixels with ``(x, y)`` the top-left corner: a box is kept as ``(x0, y0, x1, y1)`` floats,
``x1 = x + w``, in the **frame** the annotators drew on. `AnnotatedFilm.frame` is that frame's
``(width, height)``, or None when it is the file's own pixel frame; `Box.scaled_to` puts a box on the film
as read (`meddx.io.load_study` keeps the file's pixel size: DICOM rows and columns, PNG width and height),
so a set whose PNGs were resized keeps its boxes where they were.

Each set's labels map to meddx finding ids through ``meddx/data/box_labels.yaml`` (or a user's file of the
same shape, `LabelMap.from_file`); labels without a mapping are counted in `BoxSet.skipped`, never guessed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meddx.data import DataFile, load
from meddx.errors import DataFileError, InputError

FORMATS = ("coco", "nih", "rsna")
RSNA_LABEL = "Lung Opacity"
LABELS_FILE = "box_labels.yaml"
MAX_BOX_FILE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Box:
    """One expert box: ``(x0, y0, x1, y1)`` in pixels of its frame (end-exclusive), its label and finding."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    finding: str

    def scaled_to(self, frame: tuple[int, int] | None, size: tuple[int, int]) -> Box:
        """This box on a film of ``size`` (width, height), drawn on ``frame`` (None: the same size)."""
        if frame is None or frame == size:
            return self
        sx, sy = size[0] / frame[0], size[1] / frame[1]
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy, self.label, self.finding)

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The pixel rectangle it covers on a (width, height) grid: every pixel it touches, clipped."""
        x0, y0 = max(0, math.floor(self.x0)), max(0, math.floor(self.y0))
        x1, y1 = min(width, math.ceil(self.x1)), min(height, math.ceil(self.y1))
        return x0, y0, max(x0, x1), max(y0, y1)


@dataclass(frozen=True)
class AnnotatedFilm:
    """A film's name in the set (a file name, a relative path or a DICOM id) and its boxes."""

    name: str
    boxes: tuple[Box, ...]
    frame: tuple[int, int] | None

    def findings(self) -> list[str]:
        return sorted({b.finding for b in self.boxes})


@dataclass(frozen=True)
class LabelMap:
    """A set's labels -> meddx finding ids, and the frame its boxes are drawn on (None: the file's own)."""

    labels: dict[str, str]
    frame: tuple[int, int] | None

    @classmethod
    def parse(cls, entry: DataFile, known: set[str]) -> LabelMap:
        frame_value = entry.get("frame", "image")
        if frame_value.value == "image":
            frame = None
        else:
            items = list(frame_value.items())
            if len(items) != 2:
                raise frame_value.fail('[width, height] or "image"')
            width, height = (int(item.number(low=1, high=1e6)) for item in items)
            frame = (width, height)
        labels = {}
        for key, value in entry["labels"].mapping().items():
            finding = entry["labels"][key].text()
            if finding not in known:
                raise DataFileError(f"{entry.file}: labels.{key}: {finding!r} is not a meddx finding id")
            labels[str(key)] = value
        return cls(labels, frame)

    @classmethod
    def default(cls, box_format: str, known: set[str]) -> LabelMap:
        """The shipped mapping for ``box_format`` (``meddx/data/box_labels.yaml``)."""
        return cls.parse(load(LABELS_FILE)[box_format], known)

    @classmethod
    def from_file(cls, path: str | Path, known: set[str]) -> LabelMap:
        """A user's mapping: a YAML file ``{frame: [w, h] | image, labels: {label: finding id}}``."""
        try:
            parsed = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"Cannot read the findings map {Path(path).name} ({exc.strerror}).") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"The findings map {Path(path).name} is not valid YAML.") from exc
        try:
            return cls.parse(DataFile(parsed, Path(path).name), known)
        except DataFileError as exc:
            raise InputError(f"The findings map is not usable: {exc}") from exc


@dataclass
class BoxSet:
    """The films of a box file, and the labels that were skipped (label -> boxes) for want of a finding."""

    box_format: str
    films: list[AnnotatedFilm]
    skipped: Counter = field(default_factory=Counter)


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_BOX_FILE_BYTES:
            raise InputError(f"The box file {path.name} is larger than {MAX_BOX_FILE_BYTES // 2**20} MB.")
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"Cannot read the box file {path.name} ({exc.strerror}).") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"The box file {path.name} is not UTF-8 text.") from exc


def detect_format(text: str) -> str:
    """``coco``, ``nih`` or ``rsna`` from the file's content (JSON object, or the CSV's header)."""
    if text.lstrip().startswith("{"):
        return "coco"
    header = [c.strip().lower() for c in next(csv.reader(io.StringIO(text)), [])]
    if header[:2] == ["image index", "finding label"]:
        return "nih"
    if header[:1] == ["patientid"] and "target" in header:
        return "rsna"
    raise InputError(
        "The box file is none of the known layouts: a COCO JSON, NIH's BBox_List_2017.csv "
        "(Image Index, Finding Label, Bbox [x, y, w, h]) or RSNA's labels CSV (patientId, x, y, width, "
        "height, Target)."
    )


def _number(value: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {value!r} is not a number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"{where}: {value!r} is not a finite number.")
    return number


def _box(x: float, y: float, w: float, h: float, label: str, finding: str, where: str) -> Box:
    if w <= 0 or h <= 0:
        raise InputError(f"{where}: the box has no area (width {w:g}, height {h:g}).")
    return Box(x, y, x + w, y + h, label, finding)


def _group(rows: list[tuple[str, Box]], frames: dict[str, tuple[int, int] | None]) -> list[AnnotatedFilm]:
    by_name: dict[str, list[Box]] = {}
    for name, box in rows:
        by_name.setdefault(name, []).append(box)
    return [AnnotatedFilm(name, tuple(boxes), frames.get(name)) for name, boxes in by_name.items()]


def _read_coco(text: str, mapping: LabelMap, skipped: Counter) -> list[AnnotatedFilm]:
    try:
        data: Any = json.loads(text)
        images = {img["id"]: img for img in data["images"]}
        categories = {cat["id"]: str(cat["name"]) for cat in data["categories"]}
        annotations = list(data["annotations"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            "The COCO box file is not usable: it needs images (id, file_name), categories (id, name) and "
            "annotations (image_id, category_id, bbox)."
        ) from exc
    rows, frames = [], {}
    for n, ann in enumerate(annotations):
        where = f"annotations[{n}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in images or "bbox" not in ann:
            raise InputError(f"{where}: no bbox, or an image_id that is not in images.")
        label = categories.get(ann.get("category_id"))
        if label is None:
            raise InputError(f"{where}: category_id {ann.get('category_id')!r} is not in categories.")
        if label not in mapping.labels:
            skipped[label] += 1
            continue
        image = images[ann["image_id"]]
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise InputError(f"{where}: bbox must be [x, y, width, height].")
        x, y, w, h = (_number(v, where) for v in bbox)
        name = str(image.get("file_name", image["id"]))
        width, height = image.get("width"), image.get("height")
        frames[name] = (int(width), int(height)) if width and height else mapping.frame
        rows.append((name, _box(x, y, w, h, label, mapping.labels[label], where)))
    return _group(rows, frames)


def _csv_rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)][1:]


def _read_nih(text: str, mapping: LabelMap, skipped: Counter) -> list[AnnotatedFilm]:
    rows = []
    for n, row in enumerate(_csv_rows(text), start=2):
        where = f"line {n}"
        if len(row) < 6:
            raise InputError(f"{where}: expected Image Index, Finding Label, x, y, w, h.")
        name, label = row[0].strip(), row[1].strip()
        if label not in mapping.labels:
            skipped[label] += 1
            continue
        x, y, w, h = (_number(v, where) for v in row[2:6])
        rows.append((name, _box(x, y, w, h, label, mapping.labels[label], where)))
    return _group(rows, {})


def _read_rsna(text: str, mapping: LabelMap, skipped: Counter) -> list[AnnotatedFilm]:
    lines = list(csv.reader(io.StringIO(text)))
    header = [c.strip().lower() for c in lines[0]]
    try:
        cols = [header.index(c) for c in ("patientid", "x", "y", "width", "height", "target")]
    except ValueError:
        raise InputError(
            "The RSNA box file needs the columns patientId, x, y, width, height, Target."
        ) from None
    rows = []
    for n, row in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {n}"
        if len(row) <= max(cols):
            raise InputError(f"{where}: expected patientId, x, y, width, height, Target.")
        name, x, y, w, h, target = (row[c].strip() for c in cols)
        if target not in ("0", "1"):
            raise InputError(f"{where}: Target must be 0 or 1, got {target!r}.")
        if target == "0":
            continue
        if RSNA_LABEL not in mapping.labels:
            skipped[RSNA_LABEL] += 1
            continue
        box = _box(*(_number(v, where) for v in (x, y, w, h)), RSNA_LABEL, mapping.labels[RSNA_LABEL], where)
        rows.append((name, box))
    return _group(rows, {})


READERS = {"coco": _read_coco, "nih": _read_nih, "rsna": _read_rsna}


def read_boxes(
    path: str | Path, *, box_format: str = "auto", known: set[str], findings_map: str | Path | None = None
) -> BoxSet:
    """The expert boxes of a box file, their labels mapped to meddx findings.

    Args:
        path: the COCO JSON or the NIH or RSNA CSV.
        box_format: ``"coco"``, ``"nih"``, ``"rsna"`` or ``"auto"`` (by content, `detect_format`).
        known: meddx finding ids a mapping may name.
        findings_map: a YAML file replacing the shipped mapping of this format.

    Raises:
        InputError: unreadable file, unknown layout, a bad row (named by line or annotation index).
    """
    path = Path(path)
    text = _read_text(path)
    if box_format == "auto":
        box_format = detect_format(text)
    if box_format not in READERS:
        raise InputError(f"Unknown box format {box_format!r}; choose one of: auto, {', '.join(FORMATS)}.")
    if findings_map is None:
        mapping = LabelMap.default(box_format, known)
    else:
        mapping = LabelMap.from_file(findings_map, known)
    films: list[AnnotatedFilm] = []
    skipped: Counter = Counter()
    if text.strip():
        films = READERS[box_format](text, mapping, skipped)
    if box_format != "coco":
        films = [AnnotatedFilm(f.name, f.boxes, mapping.frame) for f in films]
    return BoxSet(box_format, films, skipped)
