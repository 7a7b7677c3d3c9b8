"""Writing an analysis's SR, FHIR and overlay files (``analyze --dicom-sr/--fhir/--overlay-sc``)."""

from __future__ import annotations

from pathlib import Path

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
        from meddx.interop.sr import write_sr

        write_sr(analysis, dicom_sr)
    if fhir:
        from meddx.interop.fhir import write_fhir

        write_fhir(analysis, fhir)
    if overlay_sc:
        from meddx.interop.overlay import write_overlay

        write_overlay(analysis, overlay_sc)
