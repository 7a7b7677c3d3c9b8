"""The functions behind the page's events and the two public endpoints, bound to one `Settings`.

Public endpoints (``gradio_client`` and MCP), with their parameters by name (`API_PARAMETERS`):

- ``/analyze``: (film, notes, findings, custom_findings, scoring_mode, attribution_method, maps, threshold)
  -> (result JSON, report Markdown). Only ``film`` is required.
- ``/notes``: (notes) -> ``{"concepts": [...]}``.

Every handler builds one `AnalyzeRequest` from its inputs and answers with ``{component: value}`` for the
components it changes (`meddx.app.page.Page`). Privacy: nothing is flagged or logged except, on an
internal error, the exception type and code location (never notes, pixels or DICOM tags); the uploaded file
and the per-request folder holding the downloads are deleted once the response is built (the upload's
empty folder within a minute: `meddx.app.uploads`).
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from meddx.app import views
from meddx.app.loading import MODEL
from meddx.app.uploads import UploadsInUse
from meddx.config import Limits, Settings
from meddx.errors import InputError, MeddxError
from meddx.explain.methods import DEFAULT_METHOD, MAX_MAPS, METHOD_NAMES
from meddx.model.modes import MODES
from meddx.model.vocabulary import MAX_LABEL_CHARS, load_vocabulary, parse_labels
from meddx.notes import extract_concepts, without_surrogates
from meddx.report.render import render_html, render_json
from meddx.result import Analysis

if TYPE_CHECKING:
    from meddx.app.page import Page
    from meddx.train.feedback import FeedbackDesk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzeRequest:
    """One press of Analyze, or one ``/analyze`` call: the inputs by their API parameter names.

    ``film`` is Gradio's FileData payload (the events run with ``preprocess=False``), whose path Gradio has
    checked lies in its upload folder (`gr.File`'s own preprocessing would leave a stray empty temp file
    behind on every call).
    """

    film: dict | None
    notes: str | None = ""
    findings: list[str] | None = None
    custom_findings: str | None = ""
    scoring_mode: str | None = "zero-shot"
    attribution_method: str | None = DEFAULT_METHOD
    maps: int | float | None = 3
    threshold: float | None = 0.0

    @classmethod
    def from_components(cls, values: dict[Any, Any], page: Page) -> AnalyzeRequest:
        """The request from a page event's ``{component: value}`` inputs."""
        return cls(**{name: values.get(page.input(name)) for name in API_PARAMETERS})

    def validated(self, limits: Limits) -> AnalyzeRequest:
        """The request with every argument checked for its type and range, None replaced by its default, and
        lone surrogates in text replaced; nothing is built yet (labels are counted, not made).

        Raises:
            InputError: an argument of the wrong type or out of range; the message names the argument.
        """
        film = self.film
        if film is None or film == "" or (isinstance(film, dict) and not film.get("path")):
            raise InputError("Upload a chest X-ray first (PNG, JPEG, BMP, TIFF, WebP or DICOM).")
        if not isinstance(film, dict) or not isinstance(film.get("path"), str):
            raise InputError(
                "film must be an uploaded file ({'path': ..., 'meta': {'_type': 'gradio.FileData'}}, which "
                "gradio_client's handle_file builds)."
            )
        notes = _text("notes", self.notes, limits.max_note_chars)
        custom = _text("custom_findings", self.custom_findings, limits.max_labels * (MAX_LABEL_CHARS + 2))
        findings = self.findings
        if findings is not None:
            if not isinstance(findings, list | tuple):
                raise InputError(
                    'findings must be a list of finding ids, e.g. ["effusion", "pneumothorax"] (a single '
                    "string is not a list); free-text findings go in custom_findings."
                )
            if not all(isinstance(item, str) for item in findings):
                raise InputError('findings must be a list of strings, e.g. ["effusion", "pneumothorax"].')
            findings = [without_surrogates(item) for item in findings]
        count = len(findings or []) + len(parse_labels(custom) or [])
        if count > limits.max_labels:
            raise InputError(
                f"Too many findings ({count}); at most {limits.max_labels} can be scored at once."
            )
        load_vocabulary().check_known(findings or [])  # "foo" is an error with "did you mean", not free text
        mode = _choice("scoring_mode", self.scoring_mode, MODES, default="zero-shot")
        method = _choice(
            "attribution_method", self.attribution_method, tuple(METHOD_NAMES), default=DEFAULT_METHOD
        )
        maps = _number("maps", self.maps, default=3, low=0, high=MAX_MAPS, whole=True)
        threshold = _number("threshold", self.threshold, default=0.0, low=0.0, high=0.99)
        return AnalyzeRequest(film, notes, findings, custom, mode, method, maps, threshold)

    def labels(self) -> list[str] | None:
        """Chosen vocabulary ids plus free-text labels; None (score everything) when nothing was narrowed."""
        all_ids = [f.id for f in load_vocabulary().findings]
        chosen = list(all_ids if self.findings is None else self.findings)
        custom = parse_labels(self.custom_findings) or []
        if set(chosen) == set(all_ids) and not custom:
            return None
        return chosen + custom

    def options(self) -> dict[str, Any]:
        """`meddx.pipeline.analyze`'s options (it checks them); ``threshold`` 0: each finding's own.

        Raises:
            InputError: ``maps`` or ``threshold`` is not a number (API calls come without the widgets).
        """
        try:
            maps, threshold = int(self.maps), float(self.threshold or 0.0)
        except (TypeError, ValueError, OverflowError):
            raise InputError("maps must be a whole number and threshold a number.") from None
        return {
            "mode": self.scoring_mode,
            "method": self.attribution_method,
            "top_k": maps,
            "threshold": threshold or None,
        }


API_PARAMETERS = tuple(f.name for f in fields(AnalyzeRequest))
"""``/analyze``'s parameters, in order: the inputs of both Analyze events, by name."""


def _text(name: str, value: Any, max_chars: int) -> str:
    """A text argument: None is "", anything but a string is refused, lone surrogates are replaced."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text (a string), not {_kind(value)}.")
    if len(value) > max_chars:
        raise InputError(
            f"{name} is too long: {len(value):,} characters; at most {max_chars:,} are accepted."
        )
    return without_surrogates(value)


_OPTION_SHAPE = re.compile(r"[A-Za-z_-]{1,30}")
"""An unknown option is quoted back only if it looks like one (never free text, which may identify)."""


def _choice(name: str, value: Any, choices: tuple[str, ...], *, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) and _OPTION_SHAPE.fullmatch(value) else _kind(value)
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {shown}.")
    return value


def _number(name: str, value: Any, *, default: float, low: float, high: float, whole: bool = False) -> float:
    """A number within [low, high]; None is the default; booleans, text and infinities are refused."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        kind = "a whole number" if whole else "a number"
        raise InputError(f"{name} must be {kind} from {low:g} to {high:g}, not {_kind(value)}.")
    if not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise InputError(f"{name} must be {kind} from {low:g} to {high:g}; got {value:g}.")
    return int(value) if whole else float(value)


def _kind(value: Any) -> str:
    """What a value is, in words, without quoting it (it may be patient text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "an infinite or undefined number"
    return {
        bool: "true or false",
        str: "text",
        list: "a list",
        tuple: "a list",
        dict: "an object",
        int: "a number",
        float: "a number",
    }.get(type(value), "a value of another type")


def model_ready(report: Callable[[str], None]) -> Callable[..., Analysis]:
    """`meddx.pipeline.analyze`, once the model loading in the background is ready (`meddx.app.loading`);
    ``report(sentence)`` says that the request is waiting for it."""
    MODEL.wait(report)
    from meddx.pipeline import analyze  # the model's stack: not imported before the page serves

    return analyze


@contextmanager
def shown_errors(action: str) -> Iterator[None]:
    """Show `MeddxError` messages as they are; turn anything else into a generic message.

    Unexpected errors are logged by type and code location only: exception messages can quote input.
    """
    try:
        yield
    except MeddxError as exc:
        raise gr.Error(html.escape(str(exc), quote=False), print_exception=False) from None
    except Exception as exc:
        frames = "; ".join(
            f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)
        )
        log.error("%s failed: %s at %s", action, type(exc).__name__, frames)
        raise gr.Error(
            f"Internal error while {action}. Nothing was kept; please try again, and tell the operator if it "
            "persists.",
            print_exception=False,
        ) from None


class Handlers:
    """The page's and the API's event functions for one `Settings` and one built `Page`."""

    def __init__(self, settings: Settings, page: Page) -> None:
        self.settings = settings
        self.page = page
        self.uploads = UploadsInUse(Path(get_upload_folder()))  # Gradio's, fixed when the app is built
        self.feedback: FeedbackDesk | None = None
        """Set by the page when feedback is on (`meddx.app.feedback`): results then carry a feedback_id."""

    def _analysis(self, request: AnalyzeRequest, progress: gr.Progress) -> tuple[Analysis, AnalyzeRequest]:
        """Check the request and run `analyze` on its upload within the request time budget, then delete the
        upload whatever happens, a refused argument included (once no other running request uses it).

        Returns the analysis and the checked request (its notes as read)."""
        film = request.film
        raw_path = film.get("path") if isinstance(film, dict) else None
        path = Path(raw_path) if isinstance(raw_path, str) and raw_path else None
        if path is None or not self.uploads.is_upload(path):
            request.validated(self.settings.limits)  # a missing or malformed film is named first
            raise InputError(
                "film must be a file uploaded to this server (a folder or any other path is refused); upload "
                "it with gradio_client's handle_file, or through the page."
            )
        with self.uploads.hold(path):
            request = request.validated(self.settings.limits)
            options = request.options()
            if not path.is_file():
                raise InputError(
                    "The uploaded file is no longer on the server: uploads are deleted after each analysis. "
                    "Upload it again."
                )
            analyze = model_ready(lambda sentence: progress(0.02, desc=sentence))
            progress(0.1, desc="Reading the film and scoring findings")
            analysis = analyze(
                path,
                request.notes or None,
                labels=request.labels(),
                settings=self.settings,
                filename=film.get("orig_name") or path.name,
                time_budget_s=self.settings.limits.request_timeout_s,
                keep_embedding=self.feedback is not None,
                **options,
            )
            return analysis, request

    def _with_feedback_id(self, analysis: Analysis, data: dict) -> dict:
        """With feedback on, hold the result's embedding and scores and add its ``feedback_id``."""
        if self.feedback is not None and analysis.embedding is not None:
            scores = {f.id: {"zero_shot": f.zero_shot, "fine_tuned": f.fine_tuned} for f in analysis.findings}
            data["feedback_id"] = self.feedback.hold(
                analysis.embedding.tolist(), scores, analysis.scoring.mode
            )
        return data

    def analyze_film(
        self,
        film: dict,
        notes: str = "",
        findings: list[str] | None = None,
        custom_findings: str = "",
        scoring_mode: str = "zero-shot",
        attribution_method: str = DEFAULT_METHOD,
        maps: int = 3,
        threshold: float = 0.0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> dict:
        """Score findings on one chest X-ray (PNG, JPEG, BMP, TIFF, WebP or DICOM), with optional notes.

        Returns, as JSON, every finding ranked by the image alone, each with its kind: "score" (an
        uncalibrated model score from 0 to 1 that ranks findings; not a probability of disease) or
        "probability" (calibrated); what the clinical notes change beside it (notes_odds_ratio and the
        evidence), the findings that reached a measured threshold, where the image evidence lies, follow-up
        suggestions, and a Markdown report naming the model and its revision. Decision support for a
        clinician, not a diagnosis. The uploaded file is deleted after the call.

        Args:
            film: the chest X-ray. Over MCP: an http(s) URL the server can fetch, or a data URL
                ("data:image/png;base64,..." or "data:application/dicom;base64,..."); a path on your own
                machine cannot be read by the server. From gradio_client: handle_file(path). DICOM
                identifiers are never returned.
            notes: optional free-text clinical notes or history in English; never logged or stored.
            findings: finding ids to score, e.g. ["effusion", "pneumothorax"]; default: all.
            custom_findings: optional extra findings in plain words, comma-separated, e.g. "hiatus hernia".
            scoring_mode: "zero-shot", "fine-tuned" or "both"; the last two need a trained head.
            attribution_method: "gradcam", "legrad" or "rollout" (fast), "gradient_shap",
                "integrated_gradients" or "occlusion" (docs/maps.md says which passed meddx's test).
            maps: how many of the top findings get a map and regions, 0 to 5.
            threshold: one flagging threshold for all findings, in (0, 1); 0 keeps each finding's own.

        Returns:
            The result as JSON: schema_version, model, scoring, findings (each with kind, image_probability,
            probability with the notes, notes_odds_ratio), flagging, image, timings, disclaimer,
            report_markdown (and feedback_id, for /feedback, when the operator has turned feedback on)
            The report as Markdown (decision support, not a diagnosis)
        """
        with shown_errors("analysing the film"):
            request = AnalyzeRequest(
                film, notes, findings, custom_findings, scoring_mode, attribution_method, maps, threshold
            )
            analysis, _ = self._analysis(request, progress)
            progress(0.9, desc="Writing the report")
            data = self._with_feedback_id(analysis, render_json(analysis))
        return {self.page.result: data, self.page.report: data["report_markdown"]}

    def read_notes(self, notes: str) -> dict:
        """Read free-text clinical notes and list the concepts found, each with its status and exact span.

        Statuses follow ConText: present, absent (negated), uncertain, historical or family history. Each
        concept names the chest X-ray findings it bears on. Notes are never logged or stored.

        Args:
            notes: free-text clinical notes, history or a radiology report in English.

        Returns:
            {"concepts": [...]}, each with name, display, category, status, start, end, text, supports, value
        """
        with shown_errors("reading the notes"):
            limits = self.settings.limits
            concepts = extract_concepts(
                _text("notes", notes, limits.max_note_chars), max_chars=limits.max_note_chars
            )
        return {"concepts": [c.to_dict() for c in concepts]}

    def show_notes(self, values: dict[Any, Any]) -> dict:
        """After "Check notes": the notes highlighted with the concepts ``/notes`` returned."""
        page = self.page
        text, found = values[page.notes], values[page.concepts]
        spans = [(c["start"], c["end"], views.notes_label(c)) for c in found["concepts"]]
        value = views.highlighted_notes(text, spans)
        return {page.notes_view: gr.HighlightedText(value, visible=value is not None)}

    def analyze_for_page(
        self,
        values: dict[Any, Any],
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> Iterator[dict]:
        """The page's Analyze button: every view at once, downloads written to a per-request folder.

        A generator, so that the folder is removed after Gradio has copied the downloads out of it.
        """
        workdir = Path(tempfile.mkdtemp(prefix="meddx-request-"))
        try:
            with shown_errors("analysing the film"):
                request = AnalyzeRequest.from_components(values, self.page)
                analysis, request = self._analysis(request, progress)
                progress(0.85, desc="Writing the report")
                views_now = self._views(analysis, request.notes, workdir)
            yield views_now
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _views(self, analysis: Analysis, notes: str | None, workdir: Path) -> dict:
        page = self.page
        data = render_json(analysis)
        html_path = workdir / views.download_name(analysis, "html")
        html_path.write_text(render_html(analysis), encoding="utf-8")
        json_path = workdir / views.download_name(analysis, "json")
        json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        film, annotations = views.annotated(analysis)
        shown = {
            page.top: {f.label: f.probability for f in analysis.findings},
            page.annotated: gr.AnnotatedImage((film, annotations), color_map=views.colour_map(annotations)),
            page.preview: gr.Image(np.asarray(analysis.preview), visible=True),
            page.report: data["report_markdown"],
            page.result: self._with_feedback_id(analysis, dict(data)),
            page.downloads: gr.File([str(html_path), str(json_path)], visible=True),
            page.model_info: views.model_markdown(self.settings, analysis),
            page.film: None,  # the upload is gone: clear the widget
        }
        if analysis.notes is not None and analysis.notes.concepts:
            spans = [(c.start, c.end, c.status) for c in analysis.notes.concepts]
            shown[page.notes_view] = gr.HighlightedText(views.highlighted_notes(notes, spans), visible=True)
        return shown
