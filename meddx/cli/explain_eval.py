"""``python -m meddx explain-eval``: how well the maps of the weights you run find expert boxes.

Reads a box file (`meddx.explain.boxes`: COCO/TBX11K, NIH ChestX-ray14, RSNA Pneumonia), finds each
annotated film under ``--images``, runs the production pipeline (`meddx.pipeline.analyze`, one run per
method, the boxed findings mapped) and scores each map and its regions against the boxes next to a
centre-prior and a random floor (`meddx.explain.evaluation`). Prints the table; ``--json`` writes it;
``--overlays`` writes each map with the expert boxes (green) and meddx's regions (white) drawn on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from meddx.cli.common import add_device_option, settings_from
from meddx.errors import EXIT_INPUT, InputError
from meddx.explain.boxes import FORMATS, AnnotatedFilm, Box, read_boxes
from meddx.explain.evaluation import BASELINES, EVAL_SIDE, Case, baseline_case, format_table, summarise
from meddx.explain.maps import METHODS
from meddx.explain.methods import FAST_METHODS
from meddx.io.sniff import IMAGE_SUFFIXES
from meddx.io.source import clean_name

IMAGE_SUFFIXES_ALL = {*IMAGE_SUFFIXES, ""}  # RSNA's DICOMs are sometimes stored without a suffix
MAX_MAPS_PER_RUN = 5
CHEAP_METHODS = tuple(m for m in METHODS if m in FAST_METHODS)  # the default: every map at Grad-CAM's cost


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meddx explain-eval",
        description="Score the attribution maps against expert boxes (pointing game, energy in box, "
        "region hit and IoU, each with a bootstrap 95%% interval), next to centre-prior and random floors.",
    )
    p.add_argument(
        "--images", required=True, help="folder holding the annotated films (searched recursively)"
    )
    p.add_argument(
        "--boxes", required=True, help="the box file: COCO JSON, NIH BBox_List_2017.csv or RSNA CSV"
    )
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="box layout (default: auto)")
    p.add_argument(
        "--method",
        default=",".join(CHEAP_METHODS),
        help=f"comma-separated attribution methods (default {','.join(CHEAP_METHODS)}; any of "
        f"{', '.join(METHODS)})",
    )
    p.add_argument("--findings-map", help="YAML {frame: [w, h] | image, labels: {label: finding id}}")
    p.add_argument("--model", help="model spec (default $MEDDX_MODEL)")
    p.add_argument("--limit", type=int, help="evaluate at most N films (in the box file's order)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random floor and the bootstrap")
    p.add_argument("--json", metavar="OUT", help="write the table as JSON to this file")
    p.add_argument("--overlays", metavar="DIR", help="write DIR/<film>.<method>.<finding>.png")
    add_device_option(p)
    return p


def _index(folder: Path) -> dict[str, Path]:
    """Every image file under ``folder`` by relative path, by name and by stem (first found wins)."""
    if not folder.is_dir():
        raise InputError(f"The images folder {folder.name} does not exist.")
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES_ALL:
            for key in (path.relative_to(folder).as_posix(), path.name, path.stem):
                index.setdefault(key, path)
    return index


def _find(index: dict[str, Path], name: str) -> Path | None:
    for key in (name, Path(name).name, Path(name).stem):
        if key in index:
            return index[key]
    return None


def _on_grid(box, scale_x: float, scale_y: float, width: int, height: int) -> tuple[int, int, int, int]:
    scaled = Box(box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y, "", "")
    return scaled.pixels(width, height)


def _draw(overlay: np.ndarray, boxes, regions) -> np.ndarray:
    image = overlay.copy()
    for x0, y0, x1, y1 in regions:
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
    return image


def evaluate_films(args: argparse.Namespace, films: list[AnnotatedFilm], index: dict[str, Path], methods):
    """Cases per finding and method (floors included), and how many films were not found or unreadable."""
    from meddx.explain.overlay import png_bytes
    from meddx.io.bounded import load_study_bounded
    from meddx.model.encoder import load_encoder
    from meddx.pipeline import analyze

    settings = settings_from(args)
    rng = np.random.default_rng(args.seed)
    cases: dict[str, dict[str, list[Case]]] = {}
    missing = 0
    overlays = Path(args.overlays) if args.overlays else None
    for film in films:
        path = _find(index, film.name)
        if path is None:
            missing += 1
            continue
        try:
            study = load_study_bounded(path, filename=path.name, limits=settings.limits)
        except InputError as exc:  # one unreadable film does not stop the evaluation; it is named
            print(f"meddx: {clean_name(path.name)}: {exc} (skipped)", file=sys.stderr)
            missing += 1
            continue
        width, height = study.size
        findings = film.findings()
        per_method = {}
        for method in methods:
            maps, regions = {}, {}
            for start in range(0, len(findings), MAX_MAPS_PER_RUN):
                chunk = findings[start : start + MAX_MAPS_PER_RUN]
                analysis = analyze(study, labels=chunk, settings=settings, method=method, map_findings=chunk)
                maps.update(analysis.maps)
                regions.update({r.id: [tuple(x.box) for x in r.regions] for r in analysis.findings})
                if overlays is not None:
                    _write_overlays(overlays, path, method, analysis, film, width, height, png_bytes)
            per_method[method] = (maps, regions)
        grid = load_encoder(settings.model, threads=settings.threads, device=settings.device).tower.grid
        for finding in findings:
            boxes = [b.scaled_to(film.frame, (width, height)) for b in film.boxes if b.finding == finding]
            by_method = cases.setdefault(finding, {})
            first = None
            for method, (maps, regions) in per_method.items():
                heatmap = maps[finding].on_film(max_side=EVAL_SIDE)
                h, w = heatmap.shape
                sx, sy = w / width, h / height
                case = Case(
                    heatmap,
                    tuple(b.pixels(w, h) for b in (x.scaled_to((width, height), (w, h)) for x in boxes)),
                    tuple(_on_grid(r, sx, sy, w, h) for r in regions[finding]),
                )
                by_method.setdefault(method, []).append(case)
                first = first or (case, maps[finding].geometry)
            for name in BASELINES:
                by_method.setdefault(name, []).append(baseline_case(name, first[0], first[1], grid, rng))
    return cases, missing


def _write_overlays(folder: Path, film: Path, method: str, analysis, annotated, width, height, png_bytes):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for finding_id in analysis.maps:
            boxes = [
                b.scaled_to(annotated.frame, (width, height)).pixels(width, height)
                for b in annotated.boxes
                if b.finding == finding_id
            ]
            regions = next(r.regions for r in analysis.findings if r.id == finding_id)
            image = _draw(analysis.overlay(finding_id), boxes, [tuple(r.box) for r in regions])
            (folder / f"{film.stem}.{method}.{finding_id}.png").write_bytes(png_bytes(image))
    except OSError as exc:
        raise InputError(f"Cannot write the overlays to {folder} ({exc.strerror}).") from exc


def run_explain_eval(argv: list[str]) -> int:
    """Entry point of ``python -m meddx explain-eval``; returns the exit status."""
    from meddx.model.vocabulary import load_vocabulary

    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise InputError(f"Unknown method {', '.join(unknown)!r}; choose from: {', '.join(METHODS)}.")
    known = {f.id for f in load_vocabulary().findings}
    boxes = read_boxes(args.boxes, box_format=args.format, known=known, findings_map=args.findings_map)
    films = boxes.films[: args.limit] if args.limit else boxes.films
    for label, count in sorted(boxes.skipped.items()):
        print(
            f"meddx: skipped {count} boxes labelled {clean_name(label)!r} (no meddx finding)", file=sys.stderr
        )
    if not films:
        print("meddx: the box file has no boxes of a known finding.", file=sys.stderr)
        return EXIT_INPUT
    cases, missing = evaluate_films(args, films, _index(Path(args.images)), methods)
    if missing:
        print(
            f"meddx: {missing} of {len(films)} annotated films are not in the images folder", file=sys.stderr
        )
    if not cases:
        print("meddx: none of the annotated films was found in the images folder.", file=sys.stderr)
        return EXIT_INPUT
    rows = summarise(cases, seed=args.seed)
    print(
        f"{boxes.box_format} boxes, {len(films) - missing} films; mean [bootstrap 95% CI]; floors: "
        "centre_prior, random"
    )
    print(format_table(rows))
    if args.json:
        payload = {
            "format": boxes.box_format,
            "films": len(films) - missing,
            "missing": missing,
            "skipped_labels": dict(boxes.skipped),
            "rows": [row.to_dict() for row in rows],
        }
        try:
            Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"Cannot write {Path(args.json).name} ({exc.strerror}).") from exc
    return 0
