"""The DICOMweb round trip: find chest films in a PACS (QIDO-RS), fetch them (WADO-RS), analyse them, and
store the DICOM SR back into each film's study (STOW-RS).

Resumable: meddx's SR series and instance UIDs are derived from the source and the model (and head)
revisions (`meddx.interop.identity`), so before fetching a film the study's SR series is asked for the SR
that film would get; when it is there the film is skipped. A film that cannot be fetched, read or
analysed is reported and the rest go on. Progress lines name studies, series and instances by UID only;
the URL is shown without any user name or password, and headers and tokens are never shown.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from pydicom import dcmwrite

from meddx.errors import InputError, MeddxError
from meddx.interop import identity

CHEST_MODALITIES = ("CR", "DX")
CHEST_BODY_PART = "CHEST"
_DATE = re.compile(r"\d{8}")
_TAGS = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018"}


def safe_url(url: str) -> str:
    """``url`` without a user name, password, query or fragment: what messages may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _value(item: dict, keyword: str) -> str | None:
    values = item.get(_TAGS[keyword], {}).get("Value") or []
    return str(values[0]) if values else None


@dataclass
class Film:
    """One chest film found in the PACS, by its UIDs."""

    study: str
    series: str
    instance: str


@dataclass
class RoundTrip:
    """What one run did: counts, and one line per film that failed (UIDs and the reason only)."""

    found: int = 0
    analysed: int = 0
    stored: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "found": self.found,
            "analysed": self.analysed,
            "stored": self.stored,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "failures": list(self.failed),
        }


class Pacs:
    """A DICOMweb service at ``url`` (dicomweb-client, one requests session), with optional headers."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 60) -> None:
        from dicomweb_client.api import DICOMwebClient

        if urlsplit(url).scheme not in ("http", "https"):
            raise InputError(
                "--url must be an http:// or https:// DICOMweb address, e.g. http://host/dicom-web."
            )
        self.shown = safe_url(url)
        self.client = DICOMwebClient(url, headers=dict(headers or {}), timeout=timeout_s)

    def _call(self, what: str, function: Callable, *args, **kwargs):
        """``function(*args, **kwargs)``; a failure becomes a `MeddxError` naming ``what`` and the status."""
        import requests

        try:
            return function(*args, **kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise MeddxError(f"{what} failed at {self.shown} (HTTP {status}).") from exc
        except requests.RequestException as exc:
            raise InputError(
                f"Cannot reach the DICOMweb server at {self.shown} ({type(exc).__name__}); check --url and "
                "that the server is running."
            ) from exc

    def studies(self, *, study: str | None = None, since: str | None = None) -> list[str]:
        """The Study Instance UIDs to look at: ``study`` alone, or every study (dated ``since`` or later)."""
        if study:
            return [study]
        filters = {}
        if since:
            if not _DATE.fullmatch(since):
                raise InputError("--since takes a date as YYYYMMDD, e.g. 20240131.")
            filters["StudyDate"] = f"{since}-"
        found = self._call(
            "Searching for studies",
            self.client.search_for_studies,
            search_filters=filters,
            fields=["StudyInstanceUID"],
            get_remaining=True,
        )
        return [uid for uid in (_value(item, "StudyInstanceUID") for item in found) if uid]

    def chest_films(self, study: str) -> Iterator[Film]:
        """Every instance of the study's CR and DX series whose body part is CHEST."""
        for modality in CHEST_MODALITIES:
            series_found = self._call(
                "Searching for series",
                self.client.search_for_series,
                study_instance_uid=study,
                search_filters={"Modality": modality, "BodyPartExamined": CHEST_BODY_PART},
                get_remaining=True,
            )
            for series_item in series_found:
                series = _value(series_item, "SeriesInstanceUID")
                if not series:
                    continue
                instances = self._call(
                    "Searching for instances",
                    self.client.search_for_instances,
                    study_instance_uid=study,
                    series_instance_uid=series,
                    get_remaining=True,
                )
                for item in instances:
                    instance = _value(item, "SOPInstanceUID")
                    if instance:
                        yield Film(study, series, instance)

    def instances_in_series(self, study: str, series: str) -> set[str]:
        """The SOP Instance UIDs of one series (none if the series does not exist)."""
        found = self._call(
            "Searching for meddx results",
            self.client.search_for_instances,
            study_instance_uid=study,
            series_instance_uid=series,
            get_remaining=True,
        )
        return {uid for uid in (_value(item, "SOPInstanceUID") for item in found) if uid}

    def fetch(self, film: Film) -> bytes:
        """The film as a DICOM file's bytes (WADO-RS)."""
        try:
            ds = self._call(
                "Retrieving an instance",
                self.client.retrieve_instance,
                film.study,
                film.series,
                film.instance,
            )
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
        except MeddxError:
            raise
        except Exception as exc:  # the server's bytes are not a DICOM data set pydicom can parse
            raise InputError("The instance the server sent could not be read as DICOM.") from exc
        return buffer.getvalue()

    def store(self, datasets: list, study: str) -> None:
        """Store ``datasets`` into ``study`` (STOW-RS)."""
        self._call("Storing the results", self.client.store_instances, datasets, study_instance_uid=study)


def round_trip(
    pacs: Pacs,
    studies: list[str],
    *,
    key: str,
    analyse: Callable[[bytes], object],
    build: Callable[[object], list],
    store: bool,
    tell: Callable[[str], None],
) -> RoundTrip:
    """Analyse every chest film of ``studies`` that has no meddx result for ``key`` yet.

    Args:
        pacs: the DICOMweb service.
        studies: Study Instance UIDs.
        key: `meddx.interop.identity.results_key` of the loaded model (and head).
        analyse: a film's DICOM bytes to an `meddx.result.Analysis` (raises `MeddxError` for a bad film).
        build: an analysis to the datasets to store (the SR, and the overlay where asked).
        store: store the results (STOW-RS); without it, films are analysed and nothing is written.
        tell: one progress line (UIDs and counts only).
    """
    summary = RoundTrip()
    for number, study in enumerate(studies, 1):
        films = list(pacs.chest_films(study))
        summary.found += len(films)
        done = pacs.instances_in_series(study, identity.sr_series_uid(study, key)) if films else set()
        tell(f"study {number}/{len(studies)} {study}: {len(films)} chest film(s)")
        for film in films:
            if identity.sr_instance_uid(film.instance, key) in done:
                summary.skipped += 1
                tell(f"  {film.instance}: skipped, meddx result for this model already stored")
                continue
            try:
                analysis = analyse(pacs.fetch(film))
                summary.analysed += 1
                if store:
                    datasets = build(analysis)
                    pacs.store(datasets, film.study)
                    summary.stored += 1
                    tell(f"  {film.instance}: analysed, {len(datasets)} result(s) stored")
                else:
                    tell(f"  {film.instance}: analysed (not stored: no --store-results)")
            except MeddxError as exc:
                line = f"study {film.study} series {film.series} instance {film.instance}: {exc}"
                summary.failed.append(line)
                tell(f"  {film.instance}: FAILED: {exc}")
    return summary
