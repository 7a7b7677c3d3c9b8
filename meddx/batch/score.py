"""The scoring actor: loads the model once, then runs each decoded film through `meddx.pipeline.analyze`.

Every film goes through the same call as ``python -m meddx analyze`` (one film at a time, the same
settings), so a row's probabilities are the one-at-a-time path's, not a re-implementation of them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pyarrow as pa

from meddx.batch.decode import unexpected
from meddx.batch.output import Layout
from meddx.batch.upstream import MeddxError, Settings, analysis_chain


@dataclass(frozen=True)
class Options:
    """What is asked of every film (the same for the whole run)."""

    labels: tuple[str, ...] | None = None
    top_k: int = 0
    method: str | None = None
    mode: str | None = None


class Score:
    """Ray Data callable class (one per actor): decoded films in, output rows out."""

    def __init__(self, settings: Settings, options: Options, layout: Layout) -> None:
        self.analyze, warm_up = analysis_chain()
        warm_up(settings)  # loads the model and head, the text directions, and runs one film
        self.settings, self.options, self.layout = settings, options, layout

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.layout.table([self.row(item) for item in batch.to_pylist()])

    def row(self, item: dict) -> dict:
        if item["error"]:
            return self.layout.error_row(item, item["error"], item["error_kind"])
        options = self.options
        try:
            study = pickle.loads(item["study"])
            analysis = self.analyze(
                study,
                item["notes"],
                labels=list(options.labels) if options.labels else None,
                settings=self.settings,
                filename=item["id"],
                method=options.method,
                top_k=options.top_k,
                mode=options.mode,
            )
        except MeddxError as exc:
            return self.layout.error_row(item, str(exc), "analyze")
        except Exception as exc:
            return self.layout.error_row(item, unexpected("analysing the film", exc), "unexpected")
        return self.layout.result_row(item, analysis)
