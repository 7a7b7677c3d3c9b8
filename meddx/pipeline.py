"""The whole chain, one way: upload -> study -> scores -> (notes, fusion) -> maps and regions -> Analysis.

`analyze` imports no UI code; the Gradio app, the CLI, the benchmark and the tests all call it.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from meddx.anatomy.reading import Anatomy, read_anatomy
from meddx.config import Settings
from meddx.errors import BudgetExceeded, InputError
from meddx.explain.cost import COSTS, cached_units, measure_units
from meddx.explain.maps import METHODS, film_maps
from meddx.explain.methods import DEFAULT_METHOD, FAST_METHODS, MAX_MAPS, METHOD_NAMES
from meddx.explain.overlay import FilmMap
from meddx.explain.regions import find_regions, location_note
from meddx.flagging import cut as operating_cut
from meddx.flagging import finding_results, flag, flagging, scoring_mode
from meddx.io import Study
from meddx.io.bounded import load_study_bounded
from meddx.model.calibration import Calibration, load_calibration
from meddx.model.card import model_card, record_analysis_cost
from meddx.model.encoder import Encoder, load_encoder
from meddx.model.head import TrainedHead
from meddx.model.head_store import load_head
from meddx.model.modes import MODE_RULES
from meddx.model.precision import gate_autocast
from meddx.model.sanity import chest_xray_probability, chest_xray_warnings
from meddx.model.scored import ScoredImage, score_image, score_images
from meddx.model.vocabulary import Finding, load_vocabulary
from meddx.model.zero_shot import text_directions
from meddx.notes import extract_concepts, finding_statuses, fuse
from meddx.notes.demographics import demographic_warnings
from meddx.result import (
    Analysis,
    Explanation,
    FindingResult,
    ModelInfo,
    NotesReading,
    ProbeInfo,
    ScoringInfo,
    Timings,
)

REGION_SIDE = 512
NO_MAP_FINDINGS = {"no_finding"}  # a map of "nothing is wrong" points at nothing useful
Progress = Callable[[int, int, str], None]
"""``on_progress(step, total, label)``: step 0 is scoring, steps 1..total-1 the maps, ``total`` the end."""


def _notes(notes: str | None, max_chars: int) -> NotesReading | None:
    if notes is None or not notes.strip():
        return None
    concepts = extract_concepts(notes, max_chars=max_chars)
    return NotesReading(tuple(concepts), finding_statuses(concepts))


def load_probe(settings: Settings, encoder: Encoder) -> TrainedHead | None:
    """The trained head named by ``settings.probe`` (cached), checked against the loaded encoder."""
    if not settings.probe:
        return None
    head = load_head(settings.probe)
    head.check_encoder(encoder)
    return head


def load_calibration_for(settings: Settings, encoder: Encoder) -> Calibration | None:
    """The zero-shot calibration named by ``settings.calibration`` (cached), checked against the encoder."""
    if not settings.calibration:
        return None
    calibration = load_calibration(settings.calibration)
    calibration.check_encoder(encoder)
    return calibration


def _map_targets(results: list[FindingResult], findings: list[Finding], top_k: int, requested) -> list[int]:
    index = {f.id: i for i, f in enumerate(findings)}
    if requested:
        unknown = [r for r in requested if r not in index]
        if unknown:
            raise InputError(f"Maps were requested for findings that were not scored: {', '.join(unknown)}.")
        chosen = list(dict.fromkeys(requested))
    else:
        # The image decides which findings get a map, in the order every surface lists them (flagged first,
        # then by the image's value): notes move probabilities, not where the model looked.
        by_image = sorted(results, key=lambda r: (r.flagged, r.image_probability), reverse=True)
        chosen = [r.id for r in by_image if r.id not in NO_MAP_FINDINGS][:top_k]
    return [index[fid] for fid in chosen[:MAX_MAPS]]


def _over_budget(start: float, budget_s: float | None) -> bool:
    return budget_s is not None and time.perf_counter() - start > budget_s


def _fits(start: float, budget_s: float | None, method: str, maps: int) -> bool:
    """Whether ``maps`` more maps of ``method`` end within the budget, by their measured cost
    (`meddx.explain.cost.COSTS`): a map that would pass the request limit is not started."""
    if budget_s is None:
        return True
    estimate = COSTS.estimate(method)
    expected = estimate.seconds_per_map * maps if estimate is not None else 0.0
    return time.perf_counter() - start + expected <= budget_s


def _tell(on_progress: Progress | None, step: int, total: int, label: str) -> None:
    if on_progress is not None:
        on_progress(step, total, label)


def _check_budget(start: float, budget_s: float | None, next_step: str) -> None:
    """Stop the request before ``next_step`` if it has run for more than ``budget_s`` seconds.

    Raises:
        BudgetExceeded: the budget is used up.
    """
    if _over_budget(start, budget_s):
        raise BudgetExceeded(
            f"The analysis took longer than {budget_s:g} s and was stopped before {next_step}; "
            "try the Grad-CAM method or fewer maps."
        )


def _regions(film_map: FilmMap, view: str | None, lungs: Anatomy) -> list:
    """Regions found on the map at most `REGION_SIDE` pixels wide, boxes scaled back to the film.

    Maps are smooth upsamplings of a 14 x 14 (or coarser) grid, so a smaller working copy loses nothing
    and keeps thresholding and connected components fast on a 3000 x 3000 film.
    """
    small = film_map.on_film(max_side=REGION_SIDE)
    width, height = film_map.geometry.width, film_map.geometry.height
    if small.shape == (height, width):
        return find_regions(small, view_position=view, lungs=lungs)
    sx, sy = small.shape[1] / width, small.shape[0] / height
    return [
        replace(
            region,
            box=[
                int(region.box[0] / sx),
                int(region.box[1] / sy),
                min(width, int(np.ceil(region.box[2] / sx))),
                min(height, int(np.ceil(region.box[3] / sy))),
            ],
        )
        for region in find_regions(small, view_position=view, lungs=lungs)
    ]


def analyze(
    image: Any,
    notes: str | None = None,
    *,
    labels: list[str] | None = None,
    settings: Settings | None = None,
    filename: str | None = None,
    method: str | None = None,
    top_k: int | None = None,
    map_findings: list[str] | None = None,
    threshold: float | None = None,
    mode: str | None = None,
    include_maps: bool = False,
    time_budget_s: float | None = None,
    keep_embedding: bool = False,
    on_progress: Progress | None = None,
    scored: ScoredImage | None = None,
) -> Analysis:
    """Analyse one chest film (path, bytes or file object) with optional clinical notes.

    Args:
        image: a path, raw bytes or a binary file object holding PNG, JPEG, BMP, TIFF, WebP or DICOM, or
            a `Study` already read by `meddx.io.load_study` (with the limits in ``settings``).
        notes: free-text clinical notes or history (never logged).
        labels: findings to score (names from the vocabulary or free text); None scores all.
        settings: model, limits and options; defaults to `Settings.from_env()`.
        filename: the upload's name, used only to word error messages.
        method: attribution method (a key of `meddx.explain.maps.METHODS`); default from settings.
        top_k: how many of the most probable findings get a map (0 for none); default from settings.
        map_findings: finding ids to map instead of the top k (by image probability, before the notes).
        threshold: one threshold for every finding instead of each finding's own.
        mode: "zero-shot", "fine-tuned" or "both" (the last two need a trained head, ``settings.probe``);
            default "both" with a head, else "zero-shot".
        include_maps: put the overlays into ``to_dict()`` as base64 PNGs.
        time_budget_s: a time budget in seconds, checked after reading the film (`BudgetExceeded` if it
            is spent) and before each map (the maps drawn so far are kept, and a warning names the ones
            skipped); a step that has started runs to its end. None: no limit.
        keep_embedding: put the film's unit image embedding on the result (``Analysis.embedding``), for
            clinician feedback (`meddx.train.feedback`); it never goes into the JSON.
        on_progress: called as ``on_progress(step, total, label)`` before scoring (step 0), before each
            map (steps 1 to total - 1) and at the end (step total); labels are short sentences.
        scored: this film's scoring pass, already run with the same settings and labels together with other
            films (`score_studies`: ``batch`` actors score their films in one forward); None: run here.

    The result's ``warnings`` say how the file was read and what looks wrong with the input, without
    refusing it: a colour image (`meddx.io.colour`), the encoder's own "chest X-ray or not" check
    (`meddx.model.sanity`, unmeasured), a free-text label close to a vocabulary finding ("did you mean"),
    and notes whose age or sex disagree with the DICOM header's (`meddx.notes.demographics`).

    Raises:
        InputError: the image, notes, labels or options are unusable (the message is safe to show).
        ModelError: the model cannot be loaded (the message says how to fix it).
        BudgetExceeded: ``time_budget_s`` ran out (the message says what to try instead).
    """
    settings = settings or Settings.from_env()
    method = method or settings.attribution_method or DEFAULT_METHOD
    top_k = settings.top_k_maps if top_k is None else top_k
    if method not in METHODS:
        raise InputError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")
    if not 0 <= top_k <= MAX_MAPS:
        raise InputError(f"The number of maps must be between 0 and {MAX_MAPS}.")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError("The threshold must be between 0 and 1.")
    limits = settings.limits
    timings: dict[str, float] = {}
    start = time.perf_counter()

    reading = _notes(notes, limits.max_note_chars)
    already_read = image if isinstance(image, Study) else None  # `meddx.batch` decodes in parallel tasks
    study = already_read or load_study_bounded(  # in a worker, time- and memory-bound
        image, filename=filename, limits=limits
    )
    timings["load_s"] = time.perf_counter() - start
    anatomy = read_anatomy(study.pixels, study.info.view_position)  # lung fields, chest check, CTR
    _check_budget(start, time_budget_s, "scoring the findings")

    tick = time.perf_counter()
    wanted = len(dict.fromkeys(map_findings)) if map_findings else top_k
    _tell(
        on_progress, 0, 1 + (min(wanted, 1) if method in FAST_METHODS else min(wanted, MAX_MAPS)), "Scoring"
    )
    encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
    head = load_probe(settings, encoder)
    calibration = load_calibration_for(settings, encoder)
    mode = scoring_mode(mode, head)
    vocabulary = load_vocabulary()
    findings = vocabulary.select(labels, max_labels=limits.max_labels)
    directions = text_directions(encoder, findings, cache_dir=settings.cache_dir)
    if scored is None:
        scored = score_image(encoder, study.to_pil("RGB"), directions)
    elif not torch.equal(scored.tail.difference.cpu(), directions.difference):
        raise ValueError("the scoring pass given was run for other findings or another model")
    embedding = scored.embedding()  # kept by the scoring pass: nothing is run again
    chest_xray = chest_xray_probability(encoder, embedding, cache_dir=settings.cache_dir)
    fine_tuned = head.predict(embedding) if head is not None else {}
    cuts = {
        f.id: operating_cut(f, z, fine_tuned.get(f.id), mode, head, calibration)
        for f, z in zip(findings, scored.zero_shot.tolist(), strict=True)
    }
    fused = fuse({fid: c.probability for fid, c in cuts.items()}, list(reading.concepts) if reading else [])
    timings["score_s"] = time.perf_counter() - tick

    results = finding_results(findings, scored.zero_shot.tolist(), cuts, fused, fine_tuned, threshold)
    flag(results, findings)
    for r in results:
        r.measurement = anatomy.measurements().get(r.id)
    results.sort(key=lambda r: (r.flagged, r.image_probability), reverse=True)  # image first, always
    warnings = [
        *study.warnings,
        *chest_xray_warnings(chest_xray),
        *anatomy.warnings(),
        *vocabulary.near_misses(findings),
        *demographic_warnings(study.demographics, reading.concepts if reading else ()),
    ]

    tick = time.perf_counter()
    targets = _map_targets(results, findings, top_k, map_findings)
    # Slow methods run one map at a time so that the budget is checked, and progress told, between maps.
    batches = ([targets] if targets else []) if method in FAST_METHODS else [[t] for t in targets]
    total = len(batches) + 1
    heatmaps: list[FilmMap] = []
    for step, batch in enumerate(batches, start=1):
        if not _fits(start, time_budget_s, method, len(batch)):
            skipped = ", ".join(findings[i].name for i in targets[len(heatmaps) :])
            warnings.append(
                f"The time budget ({time_budget_s:g} s) ran out after {len(heatmaps)} of {len(targets)} "
                f"maps; not drawn: {skipped}. Try Grad-CAM or fewer maps for the rest."
            )
            break
        names = ", ".join(findings[i].name for i in batch)
        _tell(on_progress, step, total, f"{METHOD_NAMES[method]} map {step} of {len(batches)}: {names}")
        drawn = time.perf_counter()
        try:
            heatmaps += film_maps(encoder, scored, batch, method=method)
        except torch.cuda.OutOfMemoryError:  # the scores stand; the maps drawn so far are kept
            torch.cuda.empty_cache()
            skipped = ", ".join(findings[i].name for i in targets[len(heatmaps) :])
            warnings.append(
                f"The GPU ran out of memory drawing the {METHOD_NAMES[method]} map; not drawn: {skipped}. "
                "Try Grad-CAM, fewer maps, or run meddx on the CPU (MEDDX_DEVICE=cpu)."
            )
            break
        COSTS.record(method, time.perf_counter() - drawn, len(batch))
    targets = targets[: len(heatmaps)]
    view = study.info.view_position
    by_id = {r.id: r for r in results}
    maps = {}
    for index, film_map in zip(targets, heatmaps, strict=True):
        finding_id = findings[index].id
        by_id[finding_id].regions = _regions(film_map, view, anatomy)
        maps[finding_id] = film_map
    timings["explain_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    _tell(on_progress, total, total, "Done")

    return Analysis(
        model=ModelInfo(
            encoder.spec,
            encoder.revision,
            encoder.resolved.text_revision,
            model_card(encoder, calibrated=calibration is not None),
        ),
        scoring=ScoringInfo(
            mode=mode,
            rule=MODE_RULES[mode],
            probe=None if head is None else ProbeInfo(settings.probe, head.revision),
        ),
        findings=results,
        image=study.info,
        warnings=warnings,
        timings=Timings(**{k: round(v, 4) for k, v in timings.items()}),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        notes=reading,
        flagging=flagging(results, settings, head, calibration, threshold),
        explanation=Explanation(
            method=method,
            mapped=tuple(findings[i].id for i in targets),
            location_note=location_note(view) if targets else None,
        ),
        preview=study.pixels,
        maps=maps,
        source=study.source,
        include_maps=include_maps,
        anatomy=anatomy,
        embedding=embedding[0].to(torch.float32).numpy().copy() if keep_embedding else None,
    )


def score_studies(
    studies: list[Study], *, labels: list[str] | None = None, settings: Settings | None = None
) -> list[ScoredImage]:
    """One scoring pass for several films already read (a batch through the image tower at once, on the
    settings' device); each result goes to ``analyze(study, scored=...)`` with the same labels and settings.
    """
    settings = settings or Settings.from_env()
    encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
    findings = load_vocabulary().select(labels, max_labels=settings.limits.max_labels)
    directions = text_directions(encoder, findings, cache_dir=settings.cache_dir)
    return score_images(encoder, [study.to_pil("RGB") for study in studies], directions)


def warm_up(settings: Settings | None = None, *, background: bool = False) -> Encoder:
    """Load the model, compute every finding's text directions, run one film through the chain, measure what
    a slow method's map costs (before any weights are released: those methods use the whole tower; measured
    once per model and machine, `meddx.explain.cost.cached_units`), attach the
    runtime stem (``background``: one not yet exported is exported by a thread while PyTorch's serves) and
    release the text tower's weights (read back from the checkpoint if a custom label needs them)."""
    settings = settings or Settings.from_env()
    # a named GPU that is missing is refused here, at start, not on a request
    encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
    load_probe(settings, encoder)  # a head for another encoder is refused at start, not on a request
    load_calibration_for(settings, encoder)  # so is a calibration
    film = Image.new("L", (encoder.image_size, encoder.image_size), 40)
    film.paste(160, (0, 0, encoder.image_size, encoder.image_size // 2))
    buffer = io.BytesIO()
    film.save(buffer, format="PNG")
    analyze(buffer.getvalue(), "warm-up: no fever", settings=settings, top_k=1)
    # What each slow method's map costs on this model, before anyone waits for one (`meddx.explain.cost`).
    directions = text_directions(encoder, load_vocabulary().findings, cache_dir=settings.cache_dir)
    gate_autocast(encoder, directions)  # on a GPU: mixed precision only where it gives fp32's scores
    COSTS.set_units(
        cached_units(
            lambda: measure_units(encoder, score_image(encoder, film.convert("RGB"), directions)),
            model=encoder.fingerprint + ("" if encoder.device.type == "cpu" else f"@{encoder.device}"),
            threads=torch.get_num_threads(),
            cache_dir=settings.cache_dir,
        )
    )
    from meddx.model.stem import attach_runtime_stem, release_text_tower

    release_text_tower(encoder)  # the vocabulary's directions are cached; a custom label reads it back
    if settings.stem != "torch":  # the runtime stem (`meddx.model.stem`), exported once per model
        attach_runtime_stem(
            encoder,
            settings.stem,
            settings.cache_dir,
            directions=directions,
            threads=settings.threads,
            background=background,
        )
    # The cost of one analysis on this server, for the model card (`meddx.model.card`).
    record_analysis_cost(encoder, lambda: analyze(buffer.getvalue(), settings=settings))
    return encoder
