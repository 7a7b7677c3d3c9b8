"""The scoring actor: loads the model once, then runs each call's decoded films through the image tower in
one forward (`meddx.pipeline.score_studies`) and each film through `meddx.pipeline.analyze` with its part
of that pass.

Every film goes through the same call as ``python -m meddx analyze`` (the same settings and labels), only
its scoring pass shared with the call's other films (``--batch-size``: what keeps a GPU busy), so a row's
probabilities are the one-at-a-time path's (to float rounding), not a re-implementation of them. When the
shared pass fails (one film the tower cannot take, memory), each film is scored alone, so a bad film costs
only its own row.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

import pyarrow as pa

from meddx.batch.decode import unexpected
from meddx.batch.output import Layout
from meddx.batch.upstream import MeddxError, Settings, analysis_chain

log = logging.getLogger(__name__)


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
        self.analyze, warm_up, self.score_studies = analysis_chain()
        warm_up(settings)  # loads the model and head, the text directions, and runs one film
        self.settings, self.options, self.layout = settings, options, layout

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        studies = {}
        for n, item in enumerate(items):
            if not item["error"]:
                try:
                    studies[n] = pickle.loads(item["study"])
                except Exception:  # reported by `row`, which tries again
                    continue
        scored = self.score_together(studies)
        rows = [self.row(item, studies.get(n), scored.get(n)) for n, item in enumerate(items)]
        return self.layout.table(rows)

    def score_together(self, studies: dict) -> dict:
        """Film number -> its share of one scoring pass for all ``studies``; {} when that pass fails."""
        if len(studies) < 2:
            return {}
        labels = list(self.options.labels) if self.options.labels else None
        try:
            passes = self.score_studies(list(studies.values()), labels=labels, settings=self.settings)
        except Exception as exc:  # each film is then scored alone, and only a bad one loses its row
            log.warning(
                "scoring %d films together failed (%s); scoring them one by one",
                len(studies),
                type(exc).__name__,
            )
            return {}
        return dict(zip(studies, passes, strict=True))

    def row(self, item: dict, study=None, scored=None) -> dict:
        """One output row: the film's analysis (``study`` already unpickled, ``scored`` its share of a
        shared scoring pass, each None to do it here), or its error."""
        if item["error"]:
            return self.layout.error_row(item, item["error"], item["error_kind"])
        options = self.options
        try:
            study = study if study is not None else pickle.loads(item["study"])
            analysis = self.analyze(
                study,
                item["notes"],
                labels=list(options.labels) if options.labels else None,
                settings=self.settings,
                filename=item["id"],
                method=options.method,
                top_k=options.top_k,
                mode=options.mode,
                scored=scored,
            )
        except MeddxError as exc:
            return self.layout.error_row(item, str(exc), "analyze")
        except Exception as exc:
            return self.layout.error_row(item, unexpected("analysing the film", exc), "unexpected")
        return self.layout.result_row(item, analysis)
