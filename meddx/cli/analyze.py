"""``python -m meddx analyze``: films (files or folders) to JSON, a one-screen summary, or overlay PNGs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from meddx.cli.common import add_device_option, settings_from
from meddx.errors import EXIT_INPUT, InputError
from meddx.explain.methods import DEFAULT_METHOD
from meddx.io.sniff import IMAGE_SUFFIXES
from meddx.io.source import clean_name

if TYPE_CHECKING:
    from meddx.result import Analysis


def _expand(paths: list[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


ONE_PATIENT = (
    "--notes and --notes-file describe one patient: give them with one film only. For several films, "
    "use `python -m meddx batch` with a manifest whose notes column (--notes-column) gives each film its "
    "own notes."
)
"""Why one set of notes is never applied to several films."""


def _read_notes(args: argparse.Namespace) -> str | None:
    if args.notes_file:
        try:
            return Path(args.notes_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"Cannot read the notes file ({exc.strerror}).") from exc
    return args.notes


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse one or more films; one JSON object, or JSON lines for several."""
    if (args.notes is not None or args.notes_file) and (
        len(args.paths) > 1 or any(Path(p).is_dir() for p in args.paths)
    ):
        print(f"meddx: {ONE_PATIENT}", file=sys.stderr)
        return EXIT_INPUT
    from meddx.io.bounded import prestart

    prestart()  # the reader's fork server imports its readers in its own process while the model loads
    from meddx.model.vocabulary import load_vocabulary, parse_labels
    from meddx.pipeline import analyze

    settings = settings_from(args)
    notes = _read_notes(args)
    labels = parse_labels(args.labels)
    to_map = parse_labels(args.map)  # names or synonyms, as for --labels
    map_ids = [f.id for f in load_vocabulary().select(to_map)] if to_map else None
    paths = list(_expand(args.paths))
    batch = len(paths) > 1 or any(Path(p).is_dir() for p in args.paths)
    if batch and (args.dicom_sr or args.fhir or args.overlay_sc):
        raise InputError("--dicom-sr, --fhir and --overlay-sc write one file each: give a single film.")
    failures = 0
    overlay_names: set[str] = set()
    for path in paths:
        try:
            if not path.is_file():
                raise InputError("No such file.")
            analysis = analyze(
                path,
                notes,
                labels=labels,
                settings=settings,
                filename=path.name,
                method=args.method,
                top_k=args.top_k,
                map_findings=map_ids,
                threshold=args.threshold,
                mode=args.mode,
                include_maps=args.include_maps,
                on_progress=_progress_line(path.name, args.method or settings.attribution_method),
            )
        except InputError as exc:
            failures += 1
            print(f"meddx: {clean_name(path.name)}: {exc}", file=sys.stderr)  # no bidi or control characters
            if batch:
                print(json.dumps({"file": path.name, "error": str(exc)}))
            continue
        if args.dicom_sr or args.fhir or args.overlay_sc:
            from meddx.interop.files import write_interop

            write_interop(analysis, dicom_sr=args.dicom_sr, fhir=args.fhir, overlay_sc=args.overlay_sc)
        overlay_files = []
        if args.overlays:
            overlay_files = _write_overlays(analysis, path, Path(args.overlays), overlay_names)
        if not (args.json or batch):
            print(_summary(analysis, path.name, overlay_files))
            continue
        data = analysis.to_dict()
        if args.overlays:
            data["overlay_files"] = overlay_files
        if batch:
            data["file"] = path.name
        print(json.dumps(data, indent=None if batch else 2))
    if not paths:
        print("meddx: no image files found.", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_INPUT if failures else 0


def _progress_line(name: str, method: str):
    """For a slow method, ``on_progress`` printing one stderr line per map with the seconds so far."""
    from meddx.explain.methods import FAST_METHODS

    if method in FAST_METHODS:
        return None
    start = time.perf_counter()
    shown = clean_name(name)

    def tell(step: int, total: int, label: str) -> None:
        if 0 < step < total:
            elapsed = time.perf_counter() - start
            print(f"meddx: {shown}: {label} ({elapsed:.0f} s so far)", file=sys.stderr, flush=True)

    return tell


def _write_overlays(analysis: Analysis, film: Path, folder: Path, taken: set[str]) -> list[str]:
    """Each mapped finding's figure at the film's full size, as ``FOLDER/<film>.<finding>.png``, with its
    caption (alt text), score and regions in ``FOLDER/<film>.<finding>.json``.

    The figure (`meddx.explain.figure`): the map in a perceptual colour map, the finding's name and
    image-only score, a colour key, and the regions' boxes, numbered as in the JSON. Films with the same
    name from different folders (``a/image.dcm``, ``b/image.dcm``) get ``image-2``, ``image-3``...:
    ``taken`` holds the names this run has used.
    """
    from meddx.explain.figure import COLORMAP, FigureText, band_height, caption, figure
    from meddx.explain.overlay import png_bytes

    stem, n = film.stem, 1
    while stem in taken:
        n += 1
        stem = f"{film.stem}-{n}"
    taken.add(stem)
    by_id = {f.id: f for f in analysis.findings}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for finding_id, film_map in analysis.maps.items():
            result = by_id[finding_id]
            text = FigureText(result.label, result.image_probability, analysis.explanation.method)
            lines = analysis.anatomy.outline(*analysis.preview.shape[:2]) if analysis.anatomy else None
            image = figure(analysis.preview, film_map.on_film(), text, result.regions, outline=lines)
            target = folder / f"{stem}.{finding_id}.png"
            target.write_bytes(png_bytes(image))
            sidecar = {
                "image": target.name,
                "alt": caption(text, result.regions),
                "finding": finding_id,
                "label": result.label,
                "image_probability": result.image_probability,
                "probability": result.probability,
                "method": analysis.explanation.method,
                "colormap": COLORMAP,
                "film_offset_y": band_height(analysis.preview.shape[1]),
                "regions": [
                    {"number": number, **region.to_dict()} for number, region in enumerate(result.regions, 1)
                ],
                "disclaimer": analysis.disclaimer,
            }
            target.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
            written.append(str(target))
    except OSError as exc:
        raise InputError(f"Cannot write the overlays to {folder} ({exc.strerror}).") from exc
    return written


def _summary(analysis: Analysis, name: str, overlay_files: list[str]) -> str:
    model = analysis.model
    from meddx.report import wording

    lines = [f"{name}  (model {model.spec} @ {model.revision})", "  ranked by the image alone:"]
    for f in analysis.findings:  # image first (`meddx.result.SCHEMA_VERSION` 3)
        mark = "FLAG" if f.flagged else "    "
        change = wording.notes_change(f)
        lines.append(
            f"  {mark} {f.label:<22} {wording.value(f):>6} {wording.kind_words(f)}"
            + (f"; {change}" if change else "")
        )
        if f.measurement:
            lines.append(f"         {f.measurement}")
        for region in f.regions:
            box = ", ".join(str(v) for v in region.box)
            lines.append(f"         region: {region.location} (score {region.score:.2f}, box {box})")
    lines.extend(f"  overlay: {path}" for path in overlay_files)
    lines.extend(f"  warning: {w}" for w in analysis.warnings)
    lines.append(analysis.flagging.statement)
    lines.append(analysis.disclaimer)
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``analyze`` to the command line."""
    p = sub.add_parser("analyze", help="score findings on chest films")
    p.add_argument("paths", nargs="+", help="image or DICOM files, or folders of them")
    notes = p.add_mutually_exclusive_group()
    notes.add_argument("--notes", help="clinical notes text")
    notes.add_argument("--notes-file", help="read clinical notes from a file")
    p.add_argument(
        "--labels", help='comma-separated findings to score, e.g. "effusion,nodule" (default: all)'
    )
    p.add_argument(
        "--model", help="model spec: hf-hub:org/name[@rev] or local-dir:/path (default $MEDDX_MODEL)"
    )
    p.add_argument("--probe", help="trained head spec (default $MEDDX_PROBE)")
    add_device_option(p)
    p.add_argument("--mode", help="zero-shot, fine-tuned or both (the last two need a trained head)")
    p.add_argument("--threshold", type=float, help="one flagging threshold for every finding (0-1)")
    p.add_argument(
        "--method",
        help=f"attribution method (default {DEFAULT_METHOD}): gradcam, legrad or rollout (fast), "
        "integrated_gradients, gradient_shap or occlusion (seconds to a minute per map on a CPU); "
        "docs/maps.md says which passed meddx's faithfulness test",
    )
    p.add_argument("--top-k", type=int, help="maps and regions for the N most probable findings (default 3)")
    p.add_argument("--map", help="comma-separated findings to map instead of the top k")
    p.add_argument("--include-maps", action="store_true", help="embed the overlays in the JSON as base64 PNG")
    p.add_argument(
        "--overlays",
        metavar="DIR",
        help="write each map as DIR/<film>.<finding>.png (finding, image-only score, region boxes) with its "
        "caption and regions in DIR/<film>.<finding>.json",
    )
    p.add_argument(
        "--dicom-sr",
        metavar="OUT.dcm",
        help="write a DICOM SR (TID 1500) of the result into the film's study (DICOM input only)",
    )
    p.add_argument("--fhir", metavar="OUT.json", help="write a FHIR R4 DiagnosticReport bundle of the result")
    p.add_argument(
        "--overlay-sc",
        metavar="OUT.dcm",
        help="write the top finding's overlay as a DICOM Secondary Capture in the film's study (DICOM input)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (always on for several files)")
    p.set_defaults(func=cmd_analyze)
