"""Read and decode films in parallel Ray tasks: bytes -> `Study` (pickled), or an error row.

Decoding goes through `meddx.io.load_study` with the limits `meddx.pipeline.analyze` uses, so a bad
film gets the very message ``analyze`` would give it; the scoring actors then receive the `Study` itself.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pyarrow as pa

from meddx.batch.sources import HubRef, open_hub_split
from meddx.batch.upstream import MeddxError, Settings, imaging_limits, load_study

log = logging.getLogger(__name__)

NO_FILE = "No such file."
DECODED = pa.schema(
    [
        ("id", pa.string()),
        ("index", pa.int64()),
        ("source", pa.string()),
        ("path", pa.string()),
        ("notes", pa.string()),
        ("study", pa.large_binary()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
    ]
)


def unexpected(action: str, exc: Exception) -> str:
    """Log an unexpected failure by type only (messages can quote input) and return the message to store."""
    log.error("%s failed: %s", action, type(exc).__name__)
    return f"Internal error while {action}; the film was skipped (run it with `python -m meddx analyze`)."


class Decode:
    """A Ray Data batch function: items (id, index, path, notes) in, decoded studies or errors out."""

    def __init__(self, settings: Settings, hub: HubRef | None = None) -> None:
        self.limits = imaging_limits(settings)
        self.hub = hub
        self._raw = None  # the dataset with undecoded images, opened on first use

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        images, failure = None, None
        if self.hub is not None:
            try:
                images = self._hub_images([item["index"] for item in items])
            except Exception as exc:  # every row of the batch becomes an error row, the job goes on
                failure = exc
        rows = []
        for position, item in enumerate(items):
            row = {**item, "study": None, "error": None, "error_kind": None}
            try:
                if failure is not None:
                    raise failure
                if images is not None:
                    source, name = images[position]
                else:
                    source, name = self._file(item["path"])
                study = load_study(source, filename=name, limits=self.limits)
                study.source = None  # a DICOM's identifiers are for SR writing only; batch writes none
                row["study"] = pickle.dumps(study, protocol=pickle.HIGHEST_PROTOCOL)
            except MeddxError as exc:
                row["error"], row["error_kind"] = str(exc), "decode"
            except Exception as exc:
                row["error"], row["error_kind"] = unexpected("reading the film", exc), "unexpected"
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=DECODED)

    @staticmethod
    def _file(raw: str) -> tuple[Path, str]:
        from meddx.batch.upstream import InputError

        path = Path(raw) if raw else None
        if path is None or not path.is_file():
            raise InputError(NO_FILE)
        return path, path.name

    def _hub_images(self, indices: list[int]) -> list[tuple[bytes | str, str]]:
        import datasets

        hub = self.hub
        if self._raw is None:
            dataset = open_hub_split(hub.name, hub.revision, hub.split)
            self._raw = dataset.cast_column(hub.image_column, datasets.Image(decode=False))
        images = self._raw[indices][hub.image_column]
        return [
            (image["bytes"] or image["path"], Path(image["path"] or f"row {i + 1}").name)
            for i, image in zip(indices, images, strict=True)
        ]


def decode_batch(batch: pa.Table, *, settings: Settings, hub: HubRef | None = None) -> pa.Table:
    """`Decode` as a plain function, for Ray Data's task pool (``map_batches(decode_batch, ...)``)."""
    return Decode(settings, hub)(batch)
