"""Example films for the page, from ``MEDDX_EXAMPLES`` (`Settings.examples`): a folder, or
``hf-dataset:owner/name[@revision][:folder]`` downloaded once at start (on a Space with network access).

Whatever cannot be reached gives no examples and one log line (the setting, never a film); the page then
shows none. Only the files found here can be loaded as examples: a client names one by its file name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meddx.io.sniff import UPLOAD_SUFFIXES

MAX_EXAMPLES = 12
log = logging.getLogger(__name__)


def find_examples(spec: str | None) -> dict[str, Path]:
    """Example films by file name (sorted, at most `MAX_EXAMPLES`); empty when none can be reached."""
    if not spec:
        return {}
    try:
        folder = _dataset_folder(spec[len("hf-dataset:") :]) if spec.startswith("hf-dataset:") else Path(spec)
        files = sorted(
            p
            for p in Path(folder).expanduser().iterdir()
            if p.is_file() and p.suffix.lower() in UPLOAD_SUFFIXES
        )
    except Exception as exc:  # offline, missing, private: the page simply has no examples
        log.warning("MEDDX_EXAMPLES gave no examples (%s)", type(exc).__name__)
        return {}
    return {p.name: p for p in files[:MAX_EXAMPLES]}


def _dataset_folder(spec: str) -> Path:
    """Download ``owner/name[@revision][:folder]``'s films from the Hub (cached) and return the folder."""
    from huggingface_hub import snapshot_download

    repo, _, subfolder = spec.partition(":")
    repo_id, _, revision = repo.partition("@")
    patterns = [f"{subfolder.strip('/') + '/' if subfolder else ''}*{suffix}" for suffix in UPLOAD_SUFFIXES]
    root = snapshot_download(repo_id, repo_type="dataset", revision=revision or None, allow_patterns=patterns)
    return Path(root) / subfolder if subfolder else Path(root)
