"""``python -m meddx pacs``: chest films from a DICOMweb PACS, analysed, with the DICOM SR stored back.

See `meddx.interop.dicomweb` for the round trip and `docs/hospital-systems.md` for what is written where.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddx.cli.common import add_device_option
from meddx.errors import EXIT_INPUT, InputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meddx pacs",
        description="Analyse chest films (CR/DX, body part CHEST) in a DICOMweb PACS; with --store-results, "
        "store a DICOM SR (research output, not a diagnosis) into each film's study.",
    )
    p.add_argument("--url", required=True, help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--study", help="one Study Instance UID (default: every study)")
    which.add_argument("--since", metavar="YYYYMMDD", help="studies dated on or after this day")
    p.add_argument("--store-results", action="store_true", help="store the SR (STOW-RS) into each study")
    p.add_argument(
        "--overlay",
        action="store_true",
        help="store the top finding's overlay too, as a Secondary Capture (needs --store-results)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header sent with every request (repeatable); never printed",
    )
    p.add_argument(
        "--token-file",
        help="a file holding a bearer token (sent as 'Authorization: Bearer ...'); never printed",
    )
    p.add_argument("--model", help="model spec (default $MEDDX_MODEL)")
    p.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE)")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for each HTTP answer (60)")
    add_device_option(p)
    return p


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise InputError("--header takes 'NAME: VALUE', e.g. --header 'X-Api-Key: ...'.")
        headers[name.strip()] = value.strip()
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"Cannot read the token file ({exc.strerror}).") from exc
        if not token:
            raise InputError("The token file is empty.")
        headers["Authorization"] = f"Bearer {token}"
    return headers


def run_pacs(argv: list[str]) -> int:
    """Entry point of ``pacs``: exit status 0, or `EXIT_INPUT` when a film failed."""
    args = build_parser().parse_args(argv)
    from meddx.cli.common import settings_from
    from meddx.interop.dicomweb import Pacs, round_trip
    from meddx.interop.identity import results_key
    from meddx.io.bounded import prestart

    prestart()
    from meddx.model.encoder import load_encoder
    from meddx.pipeline import analyze, load_probe

    settings = settings_from(args)
    pacs = Pacs(args.url, headers=_headers(args), timeout_s=args.timeout)
    studies = pacs.studies(study=args.study, since=args.since)
    encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
    head = load_probe(settings, encoder)
    key = results_key(encoder.spec, encoder.revision, settings.probe, head and head.revision)

    def tell(line: str) -> None:
        print(f"meddx pacs: {line}", file=sys.stderr, flush=True)

    def build(analysis) -> list:
        from meddx.interop.sr import build_sr, results_key_of

        if results_key_of(analysis) != key:  # the model changed under the run: stop rather than mislabel
            raise InputError("The model changed during the run; run pacs again.")
        datasets = [build_sr(analysis)]
        if args.overlay:
            from meddx.interop.overlay import build_overlay

            try:
                datasets.append(build_overlay(analysis))
            except InputError as exc:  # the SR is still stored
                tell(f"  no overlay: {exc}")
        return datasets

    tell(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} at {pacs.shown}")
    summary = round_trip(
        pacs,
        studies,
        key=key,
        analyse=lambda data: analyze(data, settings=settings),
        build=build,
        store=args.store_results,
        tell=tell,
    )
    print(json.dumps({"summary": summary.to_dict(), "results_key": key}, indent=2))
    done = summary.to_dict()
    tell(
        f"done: {done['found']} found, {done['analysed']} analysed, {done['stored']} stored, "
        f"{done['skipped']} skipped, {done['failed']} failed"
    )
    return EXIT_INPUT if summary.failed else 0
