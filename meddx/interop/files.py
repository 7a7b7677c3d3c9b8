"""Writing an analysis's SR, FHIR and overlay files (``analyze --dicom-sr/--fhir/--overlay-sc``)."""

from __future__ import annotations

from pathlib import Path

from meddx.errors import InputError
from meddx.result import Analysis


def write_interop(
    analysis: Analysis,
    *,
    dicom_sr: str | Path | None = None,
    fhir: str | Path | None = None,
    overlay_sc: str | Path | None = None,
) -> None:
    """Write the DICOM SR to ``dicom_sr``, the FHIR bundle to ``fhir`` and the top finding's overlay as a
    Secondary Capture to ``overlay_sc`` (each may be None).

    Raises:
        InputError: the SR and the overlay need a DICOM film with UIDs (the overlay also a map and the
            film's Patient Orientation), or a file cannot be written.
    """
    if dicom_sr:
        from meddx.interop.sr import build_sr

        _save(build_sr(analysis), dicom_sr, "the DICOM SR")
    if fhir:
        from meddx.interop.fhir import write_fhir

        write_fhir(analysis, fhir)
    if overlay_sc:
        from meddx.interop.overlay import build_overlay

        _save(build_overlay(analysis), overlay_sc, "the overlay")


def _save(dataset, path: str | Path, what: str) -> None:
    """Save a built DICOM dataset as a file at ``path`` (an `InputError` if it cannot be written)."""
    try:
        dataset.save_as(path, enforce_file_format=True)
    except OSError as exc:
        raise InputError(f"Cannot write {what} to {path} ({exc.strerror}).") from exc
