"""Writing an analysis's SR and FHIR files (``analyze --dicom-sr/--fhir``)."""

from __future__ import annotations

from pathlib import Path

from meddx.result import Analysis


def write_interop(
    analysis: Analysis, *, dicom_sr: str | Path | None = None, fhir: str | Path | None = None
) -> None:
    """Write the DICOM SR to ``dicom_sr`` and the FHIR bundle to ``fhir`` (either may be None).

    Raises:
        InputError: the SR needs a DICOM film with UIDs, or a file cannot be written.
    """
    if dicom_sr:
        from meddx.interop.sr import write_sr

        write_sr(analysis, dicom_sr)
    if fhir:
        from meddx.interop.fhir import write_fhir

        write_fhir(analysis, fhir)
