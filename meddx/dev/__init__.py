"""Development tooling: tiny models, the benchmark, the attribution check and the notes evaluation.

Not part of the product: this package is left out of the wheel (``pyproject.toml``) and out of the Space
(``.github/workflows/deploy.yml``), and it may read the source checkout around it (``app.py``,
``tests/data``). Run its commands from a checkout: ``python -m meddx bench``, ``make-tiny-model``,
``attribution-check``, ``notes-eval``; an installed meddx says they need one.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout this package lives in (holds ``app.py`` and ``tests/``)."""
