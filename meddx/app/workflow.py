"""The page as a clinical workflow: one patient at a time, the film kept for re-analysis, progress per map.

- A new upload is read at once (then the uploaded file is deleted) and held for this page
  (`meddx.app.session`); every result of the previous film, its notes reading, maps and downloads are
  cleared in the same update, and the page says which film (and when) the results belong to.
- "New patient", and closing the page, forget the film and clear everything, notes included.
- Analyze uses the held film, so changing the method, the maps or the findings and pressing Analyze again
  needs no new upload.
- A file that cannot be read, or an analysis that fails, is answered with a sentence in the status line and
  an upload box ready for the next file; nothing raises, so no panel is left with an "Error" badge.
- Progress is told per map, with an estimate from the method's measured cost (`meddx.explain.cost`); over
  the time budget the finished maps are shown and a warning names the others.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from meddx.app import anyway, views
from meddx.app.handlers import AnalyzeRequest, Handlers, model_ready, shown_errors
from meddx.app.session import SessionFilm, SessionFilms
from meddx.errors import InputError
from meddx.explain.cost import COSTS, describe
from meddx.explain.methods import FAST_METHODS, METHOD_CARDS, METHOD_NAMES
from meddx.io.bounded import load_study_bounded
from meddx.io.source import clean_name
from meddx.report.render import render_html, render_json

if TYPE_CHECKING:
    from meddx.app.page import Page
    from meddx.result import Analysis

NO_FILM = "*No film yet: upload a chest X-ray to start.*"
NO_FILM_EXAMPLES = "*No film yet: upload a chest X-ray (or pick an example) to start.*"
STALE = (
    '<div class="meddx-stale" role="alert">⚠ Out of date: the notes have changed since this analysis. '
    "The findings, the notes reading, the report and the downloads below still use the old notes; press "
    "Analyze to update them.</div>"
)
"""Shown over the results while the notes differ from the ones they were computed with."""
REPORT_PLACEHOLDER = "*Upload a film and press Analyze; the report appears here.*"


class UploadGone(InputError):
    """The upload was deleted before this request could read it (another event read it first)."""


# What the deletion/insertion test found (`meddx.explain.methods.METHOD_CARDS`, docs/maps.md), where a user
# should know it when choosing.
METHOD_CAVEATS = {key: card.menu_note for key, card in METHOD_CARDS.items()}


def method_choices(maps: Any) -> list[tuple[str, str]]:
    """The method menu: each method with what one analysis of ``maps`` maps costs on this server, and
    `METHOD_CAVEATS`."""
    try:
        count = max(0, int(maps))
    except (TypeError, ValueError):
        count = 0
    choices = []
    for method in METHOD_NAMES:
        estimate = COSTS.estimate(method)
        if count == 0:
            cost = "no maps"
        elif estimate is None:
            cost = "cost not measured yet"
        else:
            how = "measured here" if estimate.measured else "estimated at start"
            cost = f"{describe(estimate.seconds_per_map * count)} for {count} map{'s' * (count != 1)}, {how}"
        caveat = f"; {METHOD_CAVEATS[method]}" if method in METHOD_CAVEATS else ""
        choices.append((f"{METHOD_NAMES[method]} ({cost}{caveat})", method))
    return choices


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "no-session"


def _warn(message: str) -> str:
    return f'<div class="meddx-alert" role="alert">⚠️ {message}</div>'


class PageFlow:
    """The page's events around one `Handlers` (settings, uploads, feedback) and one held film per page."""

    def __init__(self, handlers: Handlers, page: Page, examples: dict[str, Path] | None = None) -> None:
        self.handlers = handlers
        self.settings = handlers.settings
        self.page = page
        self.films = SessionFilms()
        self.examples = examples or {}

    # --- one patient at a time ----------------------------------------------------------------------------

    def cleared(self, *, notes: bool) -> dict:
        """Every result of the previous film gone (and the notes too when ``notes``)."""
        page = self.page
        shown = {
            page.status: "",
            page.stale: "",
            page.map_controls: gr.Row(visible=False),
            page.findings_table: "",
            page.gallery: gr.Gallery(value=None, visible=False),
            page.map_notes: "",
            page.preview: gr.Image(value=None, visible=False),
            page.report: REPORT_PLACEHOLDER,
            page.result: None,
            page.downloads: gr.File(value=None, visible=False),
            page.notes_view: gr.HighlightedText(value=None, visible=False),
            page.concepts: None,
        }
        if notes:
            shown[page.notes] = ""
        if page.feedback is not None:
            shown[page.feedback.box] = gr.Column(visible=False)
        return shown

    @property
    def no_film(self) -> str:
        """The case line without a film (it offers examples only when there are some)."""
        return NO_FILM_EXAMPLES if self.examples else NO_FILM

    def _next_patient(self, session: str, notes: Any) -> tuple[dict, str | None]:
        """A new film replaces the held one: every result goes, and the notes too when they are the ones the
        previous film was analysed with; notes typed since then stay (they are the next patient's).
        Returns the cleared views and the sentence saying what went (None for a first film)."""
        previous = self.films.get(session)
        self.films.drop(session)
        text = notes.strip() if isinstance(notes, str) else ""
        if previous is None:
            return self.cleared(notes=False), (
                "The notes typed before this upload were kept for this film." if text else None
            )
        analysed = previous.analysed_notes
        if text and analysed is not None and text == analysed.strip():
            return self.cleared(notes=True), (
                "New film: the previous film's results and the notes analysed with it were cleared."
            )
        if text:
            return self.cleared(notes=False), (
                "New film: the previous film's results were cleared; the notes typed since its last analysis "
                "were kept for this film."
            )
        return self.cleared(notes=False), "New film: the previous film's results were cleared."

    def receive_film(self, film: Any, notes: Any, request: gr.Request) -> dict:
        """A new upload: read it (the file is then deleted), hold it for this page, clear every result (and
        the notes analysed with the previous film, not notes typed since: `_next_patient`)."""
        session = _session(request)
        shown, said = self._next_patient(session, notes)
        try:
            with shown_errors("reading the film"):
                held = self._read(film)
        except gr.Error as exc:
            return {**shown, self.page.case: _warn(str(exc.message)), self.page.film: None}
        self.films.put(session, held)
        # The upload box is emptied, ready for the next patient's film; the case line names this one.
        return {**shown, **self._show_film(held, said), self.page.film: None}

    def receive_example(self, name: Any, notes: Any, request: gr.Request) -> dict:
        """An example film, chosen by its name among the server's examples."""
        if not name:
            return {self.page.example_name: gr.skip()}  # the example box was reset
        session = _session(request)
        shown, said = self._next_patient(session, notes)
        path = self.examples.get(name) if isinstance(name, str) else None
        try:
            with shown_errors("reading the example"):
                if path is None:
                    raise InputError("That example is not offered here.")
                study = load_study_bounded(path, filename=path.name, limits=self.settings.limits)
        except gr.Error as exc:
            return {**shown, self.page.case: _warn(str(exc.message))}
        held = SessionFilm(study, path.name, _now())
        self.films.put(session, held)
        return {**shown, **self._show_film(held, said), self.page.film: None, self.page.example_name: ""}

    def new_patient(self, request: gr.Request) -> dict:
        """Forget this page's film; clear every result, the notes and the upload box."""
        self.films.drop(_session(request))
        return {**self.cleared(notes=True), self.page.film: None, self.page.case: self.no_film}

    def film_cleared(self, request: gr.Request) -> dict:
        """The upload box's ×: the film and its results go; the notes stay."""
        self.films.drop(_session(request))
        return {**self.cleared(notes=False), self.page.case: self.no_film}

    def forget(self, request: gr.Request) -> None:
        """The page was closed or reloaded (``demo.unload``): forget its film now."""
        self.films.drop(_session(request))

    def _read(self, film: Any) -> SessionFilm:
        """Read an uploaded film in the bounded reader; the upload is deleted afterwards, whatever happens."""
        uploads = self.handlers.uploads
        raw_path = film.get("path") if isinstance(film, dict) else None
        path = Path(raw_path) if isinstance(raw_path, str) and raw_path else None
        if path is None or not uploads.is_upload(path):
            raise InputError("Upload a chest X-ray (PNG, JPEG, BMP, TIFF, WebP or DICOM).")
        name = clean_name(film.get("orig_name") or path.name) or "film"
        with uploads.hold(path):
            if not path.is_file():
                raise UploadGone("The uploaded file is no longer on the server. Upload it again.")
            study = load_study_bounded(path, filename=name, limits=self.settings.limits)
        return SessionFilm(study, name, _now())

    def _show_film(self, held: SessionFilm, said: str | None) -> dict:
        page = self.page
        case = views.case_markdown(held.name, held.received)
        if said:
            case += f"\n\n{said}"
        warnings = "".join(_warn(w) for w in held.study.warnings)
        return {
            page.case: case,
            page.status: warnings,
            page.preview: gr.Image(
                views.display_film(held.study.pixels),
                visible=True,
                alt_text=f"The chest film {held.name} as read (after windowing), before analysis.",
            ),
        }

    # --- analysis ------------------------------------------------------------------------------------------

    def analyze_for_page(
        self,
        values: dict[Any, Any],
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> Iterator[dict]:
        """Analyze: the held film (or the upload in the request, if it was not read yet), every view at once.

        A generator, so that the per-request folder of downloads is removed after Gradio has copied it.
        """
        yield from self._analyze(values, request, progress, map_findings=None)

    def map_chosen(
        self,
        values: dict[Any, Any],
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[dict]:
        """ "Draw maps for these": the analysis again, mapping the chosen findings instead of the top ones."""
        chosen = values.get(self.page.map_for) or []
        if not chosen:
            yield {self.page.status: _warn("Choose one or more findings to map first.")}
            return
        yield from self._analyze(values, request, progress, map_findings=list(chosen))

    def _analyze(
        self, values: dict[Any, Any], request: gr.Request, progress: Any, *, map_findings: list[str] | None
    ) -> Iterator[dict]:
        page, session = self.page, _session(request)
        workdir = Path(tempfile.mkdtemp(prefix="meddx-request-"))
        try:
            try:
                with shown_errors("analysing the film"):
                    held = self._held(values.get(page.film), session)
                    checked = AnalyzeRequest.from_components(
                        {**values, page.film: {"path": held.name}},
                        page,  # the film is the held one
                    ).validated(self.settings.limits)
                    options = checked.options()
                    if map_findings:
                        options["top_k"] = len(map_findings)
                    analyze = model_ready(lambda sentence: progress(0.02, desc=sentence))
                    analysis = analyze(
                        held.study,
                        checked.notes or None,
                        labels=checked.labels(),
                        settings=self.settings,
                        filename=held.name,
                        map_findings=map_findings,
                        time_budget_s=self.settings.limits.request_timeout_s,
                        keep_embedding=self.handlers.feedback is not None,
                        on_progress=_progress(progress, options["method"]),
                        **{k: v for k, v in options.items() if not (map_findings and k == "top_k")},
                    )
                    progress(0.97, desc="Writing the report")
                    shown = self._views(analysis, held, checked.notes, workdir)
            except gr.Error as exc:
                yield {page.status: _warn(str(exc.message))}
                return
            yield shown
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _held(self, film: Any, session: str) -> SessionFilm:
        """The upload in the request if it has not been read yet (then held), else the page's held film."""
        raw_path = film.get("path") if isinstance(film, dict) else None
        if isinstance(raw_path, str) and raw_path and Path(raw_path).is_file():
            try:
                held = self._read(film)
            except UploadGone:
                pass  # the upload event read it (and deleted it) meanwhile: use what it holds
            else:
                self.films.put(session, held)
                return held
        held = self.films.get(session)
        if held is None:
            raise InputError(
                "Upload a chest X-ray first (PNG, JPEG, BMP, TIFF, WebP or DICOM). A film is kept for "
                "30 minutes without use, and not after the page is reloaded."
            )
        return held

    def _views(self, analysis: Analysis, held: SessionFilm, notes: str | None, workdir: Path) -> dict:
        page, handlers = self.page, self.handlers
        data = render_json(analysis)
        html_path = workdir / views.download_name(analysis, "html")
        html_path.write_text(render_html(analysis), encoding="utf-8")
        json_path = workdir / views.download_name(analysis, "json")
        json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        gallery = views.map_gallery(analysis)
        mapped = [fid for fid in analysis.explanation.mapped if fid in analysis.maps]
        labels = {f.id: f.label for f in analysis.findings}
        held.maps = {labels[fid]: i for i, fid in enumerate(mapped)}
        held.ids = {f.label: f.id for f in analysis.findings}
        held.analysed_notes = notes or ""
        shown = {
            **self.cleared(notes=False),
            page.case: views.case_markdown(held.name, held.received, analysis),
            page.status: "".join(_warn(w) for w in analysis.warnings),
            page.map_controls: gr.Row(visible=True),
            page.map_notes: views.captions_html(gallery),
            page.findings_table: views.findings_html(analysis),
            page.gallery: gr.Gallery(
                value=gallery or None, visible=bool(gallery), selected_index=0 if gallery else None
            ),
            page.preview: gr.Image(
                views.display_film(analysis.preview),
                visible=True,
                alt_text=f"The chest film {held.name} as analysed (after windowing).",
            ),
            page.report: data["report_markdown"],
            page.result: handlers._with_feedback_id(analysis, dict(data)),
            page.downloads: gr.File([str(html_path), str(json_path)], visible=True),
            page.model_info: views.model_markdown(self.settings, analysis),
        }
        if analysis.notes is not None and analysis.notes.concepts:
            spans = [(c.start, c.end, views.notes_label(c)) for c in analysis.notes.concepts]
            shown[page.notes_view] = gr.HighlightedText(views.highlighted_notes(notes, spans), visible=True)
        if page.feedback is not None:
            shown.pop(page.feedback.box)  # the feedback panel shows itself after a successful analysis
        if not self.settings.hold_back:
            return shown
        # No plausible lung fields: the scores wait behind "Analyse anyway" (`meddx.app.anyway`).
        return anyway.hold_back(
            analysis,
            shown,
            gallery=page.gallery,
            captions=page.map_notes,
            table=page.findings_table,
            report=page.report,
        )

    # --- a map per finding ---------------------------------------------------------------------------------

    def notes_changed(self, notes: Any, request: gr.Request) -> str:
        """The notes were edited: mark the results out of date while they differ from the analysed notes."""
        held = self.films.get(_session(request))
        if held is None or held.analysed_notes is None:
            return ""
        text = notes if isinstance(notes, str) else ""
        return STALE if text.strip() != held.analysed_notes.strip() else ""

    def method_menu(self, maps: Any) -> gr.Dropdown:
        """The method menu's costs for ``maps`` maps (measured at start and on every map drawn since)."""
        return gr.Dropdown(choices=method_choices(maps))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")


def _progress(progress: Any, method: str) -> Callable[[int, int, str], None]:
    """``on_progress`` for the pipeline: Gradio's bar moves per map, with the time left estimated."""

    def tell(step: int, total: int, label: str) -> None:
        if step >= total:
            return
        if step == 0:
            progress(0.02, desc="Reading the film and scoring the findings")
            return
        estimate = COSTS.estimate(method)
        left = ""
        if estimate is not None and method not in FAST_METHODS:
            how = "measured" if estimate.measured else "estimated"
            left = f"; {describe(estimate.seconds_per_map * (total - step))} left ({how})"
        progress(min(0.95, step / max(total, 1)), desc=f"{label}{left}")

    return tell
