"""The output folder: Parquet parts written atomically, what they already hold, and the run's settings.

``OUT/part-<run>-<n>.parquet`` files are written under a temporary name and renamed when complete, so a
killed run leaves only whole parts (and perhaps a ``.tmp`` file, removed on the next run). A re-run reads
the ``id`` column of every part and skips those films. ``OUT/batch.json`` records the settings that shape
the rows (model, head, findings, maps, method, mode); a re-run with other settings is refused rather than
mixing rows. ``OUT/summary.json`` is rewritten at the end of every run.

One row per film. Columns: ``id``, ``source`` (the film's path relative to a folder or as the manifest
gives it; for a dataset its split), ``index`` (its position in the folder listing, manifest or dataset),
``prob__<finding>`` (the probability it is ranked by: image score, fused with the notes when there are
any), ``image_prob__<finding>`` (before notes), ``zero_shot__<finding>``, and with a trained head
``fine_tuned__<finding>``; with a trained head or a zero-shot calibration (``MEDDX_CALIBRATION``)
``flagged__<finding>`` (at its measured operating threshold; without either nothing is flagged, and the
column is left out);
``regions`` (per mapped finding: box on the film, words, in_lungs, score), ``warnings``, the film's
non-identifying ``source_format``/``width``/``height``/``modality``/``view_position``, ``has_notes``,
``error`` and ``error_kind`` (``decode``, ``analyze`` or ``unexpected``), ``scoring_mode``,
``model_spec``, ``model_revision``, ``probe_spec``, ``probe_revision`` and ``meddx_version``. Notes text
never reaches the output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meddx.batch.upstream import InputError, __version__

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
RUN_FILE = "batch.json"
SUMMARY_FILE = "summary.json"
REGION = pa.struct(
    [
        ("finding", pa.string()),
        ("location", pa.string()),
        ("in_lungs", pa.bool_()),  # null: located by the film's frame (no plausible lung fields)
        ("score", pa.float64()),
        ("box", pa.list_(pa.int32())),
    ]
)
IMAGE_FIELDS = (
    ("source_format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("modality", pa.string()),
    ("view_position", pa.string()),
)


@dataclass(frozen=True)
class Layout:
    """The output columns for one run: the findings scored, whether a trained head adds its scores, and
    whether there are operating points to flag at (a head or a calibration)."""

    findings: tuple[str, ...]
    head: bool = False
    flags: bool = False

    def schema(self) -> pa.Schema:
        fields = [("id", pa.string()), ("source", pa.string()), ("index", pa.int64())]
        for prefix in ("prob", "image_prob", "zero_shot") + (("fine_tuned",) if self.head else ()):
            fields += [(f"{prefix}__{f}", pa.float64()) for f in self.findings]
        if self.flags:
            fields += [(f"flagged__{f}", pa.bool_()) for f in self.findings]
        fields += [("regions", pa.list_(REGION)), ("warnings", pa.list_(pa.string())), *IMAGE_FIELDS]
        fields += [("has_notes", pa.bool_()), ("error", pa.string()), ("error_kind", pa.string())]
        fields += [
            (name, pa.string())
            for name in ("scoring_mode", "model_spec", "model_revision", "probe_spec", "probe_revision")
        ]
        fields.append(("meddx_version", pa.string()))
        return pa.schema(fields)

    def result_row(self, item: dict, analysis) -> dict:
        """The row of one analysed film (``analysis`` is a `meddx.result.Analysis`)."""
        row = self._base(item)
        by_id = {f.id: f for f in analysis.findings}
        for finding_id in self.findings:
            result = by_id[finding_id]
            row[f"prob__{finding_id}"] = result.probability
            row[f"image_prob__{finding_id}"] = result.image_probability
            row[f"zero_shot__{finding_id}"] = result.zero_shot
            if self.head:
                row[f"fine_tuned__{finding_id}"] = result.fine_tuned
            if self.flags:
                row[f"flagged__{finding_id}"] = result.flagged
        row["regions"] = [
            {"finding": f.id, **region.to_dict()} for f in analysis.findings for region in f.regions
        ]
        row["warnings"] = list(analysis.warnings)
        for name, _ in IMAGE_FIELDS:
            row[name] = getattr(analysis.image, name)
        probe = analysis.scoring.probe
        row.update(
            scoring_mode=analysis.scoring.mode,
            model_spec=analysis.model.spec,
            model_revision=analysis.model.revision,
            probe_spec=probe.spec if probe else None,
            probe_revision=probe.revision if probe else None,
        )
        return row

    def error_row(self, item: dict, message: str, kind: str) -> dict:
        """The row of a film that could not be analysed: its identity and one readable message."""
        return {**self._base(item), "error": message, "error_kind": kind, "regions": [], "warnings": []}

    @staticmethod
    def _base(item: dict) -> dict:
        return {
            "id": item["id"],
            "source": item["source"],
            "index": item["index"],
            "has_notes": item.get("notes") is not None,
            "meddx_version": __version__,
        }

    def table(self, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema())


def check_run(out: Path, settings: dict) -> None:
    """Record the run's settings in ``OUT/batch.json``, or refuse if ``OUT`` holds a run with others.

    Raises:
        InputError: ``OUT`` already holds rows made with different settings.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
        if changed:
            raise InputError(
                f"{out} holds results made with other settings ({', '.join(changed)}); re-run with the same "
                "options to resume, or choose another --out."
            )
        return
    path.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")


def done_ids(out: Path) -> tuple[set[str], int]:
    """Ids of the films in the complete parts of ``out``, and the number of rows there.

    Left-over temporary files of a killed run, and parts that cannot be read, are removed (their films
    are analysed again).
    """
    for stale in out.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)
    ids: set[str] = set()
    rows = 0
    for part in sorted(out.glob(PART_GLOB)):
        try:
            column = pq.read_table(part, columns=["id"]).column("id").to_pylist()
        except (OSError, pa.ArrowException):
            log.warning("removing an unreadable part of an earlier run: %s", part.name)
            part.unlink(missing_ok=True)
            continue
        ids.update(column)
        rows += len(column)
    return ids, rows


class PartWriter:
    """Buffers rows and writes them as whole Parquet parts, at most ``rows_per_part`` rows or
    ``seconds_per_part`` seconds of work per part (what a kill can lose)."""

    def __init__(self, out: Path, layout: Layout, *, rows_per_part: int = 1000, seconds_per_part: float = 30):
        self.out, self.layout = out, layout
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.parts = 0
        self.since = time.monotonic()

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.rows_per_part or time.monotonic() - self.since >= self.seconds_per_part:
            self.flush()

    def flush(self) -> None:
        if self.buffered:
            table = pa.concat_tables(self.buffer).cast(self.layout.schema())
            self.parts += 1
            name = f"part-{self.run}-{self.parts:05d}.parquet"
            tmp = self.out / f".{name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.out / name)
        self.buffer, self.buffered, self.since = [], 0, time.monotonic()
