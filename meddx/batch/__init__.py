"""Large archives on Ray Data (the optional ``meddx[scale]`` extra): ``python -m meddx batch``.

Modules, in flow order: `sources` (folder, CSV/Parquet manifest or ``hf:`` dataset to a film list),
`decode` (parallel tasks: bytes to `meddx.io.Study`, or an error row), `score` (an actor pool: each
actor loads the model once and runs `meddx.pipeline.analyze` per film), `output` (Parquet parts, what a
re-run skips, the run's settings), `engine` (the Ray Data pipeline and the summary), `cli`, `bench`.
`upstream` is the only module that imports the rest of meddx. Ray is imported only when a job runs.
"""
