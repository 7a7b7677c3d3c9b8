"""The Gradio app: a Blocks page for people, and two API/MCP endpoints for programs.

Public endpoints (``gradio_client`` and MCP):

- ``/analyze``: (film, notes, findings, custom_findings, scoring_mode, attribution_method, maps, threshold)
  -> (result JSON, report Markdown). Only ``film`` is required.
- ``/notes``: (notes) -> ``{"concepts": [...]}``.

The page's own events are private. Privacy: nothing is flagged or logged except, on an internal error, the
exception type and code location (never notes, pixels or DICOM tags); the uploaded file and the per-request
folder holding the downloads are deleted once the response is built (the upload's empty folder within a
minute: `meddx.app.uploads`), and ``delete_cache`` sweeps whatever Gradio itself cached (the images and
downloads it serves back).

There are no examples: no openly licensed chest film ships with the repository.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import json
import logging
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from meddx import DISCLAIMER, __version__
from meddx.app.uploads import UploadsInUse
from meddx.clinical_notes import extract_concepts
from meddx.config import Settings
from meddx.errors import InputError, MeddxError
from meddx.model.head import MODES
from meddx.model.vocabulary import load_vocabulary, parse_labels
from meddx.pipeline import MAX_MAPS, Analysis, analyze
from meddx.report.render import code_span, render_html, render_json

log = logging.getLogger(__name__)

FILE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"]
METHODS = [
    ("Grad-CAM (fast, about a second)", "gradcam"),
    ("Gradient SHAP (slow, several seconds)", "gradient_shap"),
    ("Integrated Gradients (slow, tens of seconds)", "integrated_gradients"),
    ("Occlusion (slowest, tens of seconds or more)", "occlusion"),
]
TOP_LABELS = 5
DISPLAY_SIDE = 1024
"""Films shown in the page are downscaled to at most this many pixels per side."""
CACHE_SWEEP = (300, 900)
"""``delete_cache``: every 5 minutes, delete what Gradio cached more than 15 minutes ago."""
MAP_COLOURS = ["#e8590c", "#1c7ed6", "#ae3ec9", "#2f9e44", "#f08c00"]
STATUS_COLOURS = {
    "present": "#ffa8a8",
    "absent": "#b2f2bb",
    "uncertain": "#ffec99",
    "historical": "#ced4da",
    "family": "#d0bfff",
}
BANNER = (
    '<div class="meddx-banner" role="note"><strong>Decision support, not a diagnosis.</strong> '
    f"{html.escape(DISCLAIMER)}</div>"
)
CSS = """
.meddx-banner { background: #fff8e6; border-left: 6px solid #f0b429; border-radius: 8px;
  padding: 10px 14px; color: #3e2c00; font-size: 0.95rem; line-height: 1.45; }
.dark .meddx-banner { background: #3b2f0b; color: #fff3c4; }
.meddx-title h1 { margin: 4px 0 0; font-size: 1.6rem; }
.meddx-title p { margin: 2px 0 6px; opacity: 0.8; }
.meddx-report { overflow-x: auto; }
.meddx-report th, .meddx-report td { word-break: normal; overflow-wrap: normal; padding: 4px 8px; }
footer { flex-wrap: wrap; }
"""


def _analyze_options(*, mode: str, method: str, maps: int, threshold: float) -> dict[str, Any]:
    """Options for `analyze`, each passed only if its signature names it (the one switch to flip).

    `analyze` checks their values; ``threshold`` 0 means "each finding's own threshold" (None).

    Raises:
        InputError: ``maps`` or ``threshold`` is not a number (API callers reach here without the widgets).
    """
    try:
        maps, threshold = int(maps), float(threshold or 0.0)
    except (TypeError, ValueError):
        raise InputError("maps must be a whole number and threshold a number.") from None
    wanted = {"mode": mode, "method": method, "top_k": maps, "threshold": threshold or None}
    accepted = inspect.signature(analyze).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


def _labels(findings: list[str] | None, custom_findings: str | None) -> list[str] | None:
    """Chosen vocabulary ids plus free-text labels; None (score everything) when nothing was narrowed."""
    all_ids = [f.id for f in load_vocabulary().findings]
    chosen = list(all_ids if findings is None else findings)
    custom = parse_labels(custom_findings) or []
    if set(chosen) == set(all_ids) and not custom:
        return None
    return chosen + custom


@contextmanager
def _shown_errors(action: str) -> Iterator[None]:
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


def _display_scale(height: int, width: int) -> float:
    return min(1.0, DISPLAY_SIDE / max(height, width))


def _resize(array: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return array
    size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))
    return np.asarray(Image.fromarray(array.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))


def _film(analysis: Analysis) -> np.ndarray:
    """The analysed film, RGB, at display size."""
    gray = np.asarray(analysis.preview, dtype=np.uint8)
    return np.repeat(_resize(gray, _display_scale(*gray.shape))[..., None], 3, axis=2)


def _mask(analysis: Analysis, finding_id: str, regions: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """One finding's annotation: its heatmap as translucent colour, its regions as opaque outlines."""
    mask = np.zeros(shape, np.float32)
    scale = shape[0] / np.asarray(analysis.preview).shape[0]
    if finding_id in analysis.maps:
        heat = analysis.maps[finding_id].on_film(max_side=max(shape))[: shape[0], : shape[1]]
        mask[: heat.shape[0], : heat.shape[1]] = np.where(heat >= 0.25, 0.65 * heat, 0.0)
    for region in regions:
        x0, y0, x1, y1 = (max(0, round(v * scale)) for v in region["box"])
        edge = max(2, shape[0] // 200)
        mask[y0:y1, x0 : x0 + edge] = mask[y0:y1, max(x1 - edge, 0) : x1] = 1.0
        mask[y0 : y0 + edge, x0:x1] = mask[max(y1 - edge, 0) : y1, x0:x1] = 1.0
    return mask


def _annotated(analysis: Analysis) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The film with one annotation per finding that has a map or regions (most probable first)."""
    film = _film(analysis)
    annotations = [
        (_mask(analysis, f.id, f.regions, film.shape[:2]), f"{f.label} ({f.probability:.2f})")
        for f in analysis.findings
        if f.id in analysis.maps or f.regions
    ]
    return film, annotations[:MAX_MAPS]


def _colour_map(annotations: list[tuple[np.ndarray, str]]) -> dict[str, str]:
    return {label: MAP_COLOURS[i % len(MAP_COLOURS)] for i, (_, label) in enumerate(annotations)}


def _highlight(notes: str | None, concepts: list[dict]) -> gr.HighlightedText:
    """The notes with each concept's span marked by its status; hidden when there are no notes."""
    entities, end = [], 0
    for concept in sorted(concepts, key=lambda c: c["start"]):
        if concept["start"] >= end:
            entities.append({"entity": concept["status"], "start": concept["start"], "end": concept["end"]})
            end = concept["end"]
    value = {"text": notes, "entities": entities} if notes else None
    return gr.HighlightedText(value, visible=bool(notes))


def _download_name(analysis: Analysis, suffix: str) -> str:
    stamp = "".join(ch for ch in analysis.created if ch.isalnum())[:15] or "report"
    return f"meddx-{stamp}.{suffix}"


def _model_markdown(settings: Settings, analysis: Analysis | None = None) -> str:
    model = (
        analysis.model
        if analysis
        else {"spec": settings.model, "revision": "(shown after the first analysis)"}
    )
    lines = [
        f"**Model** {code_span(model['spec'])}, revision {code_span(model.get('revision') or 'unknown')}",
        f"**Trained head** {code_span(settings.probe) if settings.probe else 'none (zero-shot scores only)'}",
        f"**Default attribution** {code_span(settings.attribution_method)}, up to {settings.top_k_maps} maps",
        f"**Limits** files up to {settings.limits.max_file_mb} MB, notes up to "
        f"{settings.limits.max_note_chars:,} characters",
        f"**meddx** {__version__}. Uploads are deleted after each analysis; the images and downloads shown "
        f"here are deleted {CACHE_SWEEP[1] // 60} to {sum(CACHE_SWEEP) // 60} minutes later. Nothing is "
        "flagged or logged.",
    ]
    if analysis:
        lines.insert(2, f"**Scoring** {analysis.scoring.get('method') or analysis.scoring.get('mode', '')}")
    return "\n\n".join(lines)


class _Service:
    """The functions behind the events, bound to one `Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uploads = UploadsInUse(Path(get_upload_folder()))  # Gradio's, fixed when the app is built

    def _analysis(
        self, film: dict | None, notes: str | None, *options: Any, progress: gr.Progress
    ) -> Analysis:
        """Run `analyze` on an upload within the request time budget, then delete the upload whatever happens
        (once no other running request uses the same upload).

        The events run with ``preprocess=False``: ``film`` is Gradio's FileData payload, whose path Gradio has
        checked lies in its upload folder (`gr.File`'s own preprocessing would leave a stray empty temp file
        behind on every call).
        """
        if not film or not film.get("path"):
            raise InputError("Upload a chest X-ray first (PNG, JPEG, BMP, TIFF, WebP or DICOM).")
        findings, custom_findings, scoring_mode, attribution_method, maps, threshold = options
        path = Path(film["path"])
        with self.uploads.hold(path):
            keywords = _analyze_options(
                mode=scoring_mode, method=attribution_method, maps=maps, threshold=threshold
            )
            if not path.is_file():
                raise InputError(
                    "The uploaded file is no longer on the server: uploads are deleted after each analysis. "
                    "Upload it again."
                )
            progress(0.1, desc="Reading the film and scoring findings")
            return analyze(
                path,
                notes or None,
                labels=_labels(findings, custom_findings),
                settings=self.settings,
                filename=film.get("orig_name") or path.name,
                time_budget_s=self.settings.limits.request_timeout_s,
                **keywords,
            )

    def analyze_film(
        self,
        film: dict,
        notes: str = "",
        findings: list[str] | None = None,
        custom_findings: str = "",
        scoring_mode: str = "zero-shot",
        attribution_method: str = "gradcam",
        maps: int = 3,
        threshold: float = 0.0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> tuple[dict, str]:
        """Score findings on one chest X-ray (PNG, JPEG, BMP, TIFF, WebP or DICOM), with optional notes.

        Returns per-finding probabilities, the findings that reached their thresholds, evidence taken from
        the clinical notes, where the image evidence lies, follow-up suggestions, and a Markdown report that
        names the model and its revision. Decision support for a clinician, not a diagnosis: scores are
        model outputs, not measured accuracy. The uploaded file is deleted after the call.

        Args:
            film: the chest X-ray file (DICOM identifiers are never returned).
            notes: optional free-text clinical notes or history in English; never logged or stored.
            findings: finding ids to score, e.g. ["effusion", "pneumothorax"]; default: all.
            custom_findings: optional extra findings in plain words, comma-separated, e.g. "hiatus hernia".
            scoring_mode: "zero-shot", "fine-tuned" or "both"; the last two need a trained head.
            attribution_method: "gradcam" (fast), "gradient_shap", "integrated_gradients" or "occlusion".
            maps: how many of the top findings get a map and regions, 0 to 5.
            threshold: one flagging threshold for all findings, in (0, 1); 0 keeps each finding's own.

        Returns:
            The result as JSON: model, scoring, findings, image, timings, disclaimer, report_markdown
            The report as Markdown (decision support, not a diagnosis)
        """
        options = (findings, custom_findings, scoring_mode, attribution_method, maps, threshold)
        with _shown_errors("analysing the film"):
            analysis = self._analysis(film, notes, *options, progress=progress)
            progress(0.9, desc="Writing the report")
            data = render_json(analysis)
        return data, data["report_markdown"]

    def read_notes(self, notes: str) -> dict:
        """Read free-text clinical notes and list the concepts found, each with its status and exact span.

        Statuses follow ConText: present, absent (negated), uncertain, historical or family history. Each
        concept names the chest X-ray findings it bears on. Notes are never logged or stored.

        Args:
            notes: free-text clinical notes, history or a radiology report in English.

        Returns:
            {"concepts": [...]}, each with name, display, category, status, start, end, text, supports, value
        """
        with _shown_errors("reading the notes"):
            concepts = extract_concepts(notes or "", max_chars=self.settings.limits.max_note_chars)
        return {"concepts": [c.to_dict() for c in concepts]}

    def analyze_for_page(
        self,
        film: dict | None,
        notes: str,
        findings: list[str],
        custom_findings: str,
        scoring_mode: str,
        attribution_method: str,
        maps: int,
        threshold: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> Iterator[tuple]:
        """The page's Analyze button: every view at once, downloads written to a per-request folder.

        A generator, so that the folder is removed after Gradio has copied the downloads out of it.
        """
        options = (findings, custom_findings, scoring_mode, attribution_method, maps, threshold)
        workdir = Path(tempfile.mkdtemp(prefix="meddx-request-"))
        try:
            with _shown_errors("analysing the film"):
                analysis = self._analysis(film, notes, *options, progress=progress)
                progress(0.85, desc="Writing the report")
                views = self._views(analysis, notes, workdir)
            yield views
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _views(self, analysis: Analysis, notes: str | None, workdir: Path) -> tuple:
        data = render_json(analysis)
        html_path = workdir / _download_name(analysis, "html")
        html_path.write_text(render_html(analysis), encoding="utf-8")
        json_path = workdir / _download_name(analysis, "json")
        json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        concepts = (analysis.notes or {}).get("concepts", [])
        film, annotations = _annotated(analysis)
        return (
            {f.label: f.probability for f in analysis.findings},
            gr.AnnotatedImage((film, annotations), color_map=_colour_map(annotations)),
            gr.Image(np.asarray(analysis.preview), visible=True),
            data["report_markdown"],
            data,
            gr.File([str(html_path), str(json_path)], visible=True),
            _model_markdown(self.settings, analysis),
            None,
            _highlight(notes, concepts) if concepts else gr.skip(),
        )


def _input_column(settings: Settings) -> dict[str, gr.components.Component]:
    """Upload, notes and the advanced options; returns the components by API parameter name."""
    vocabulary = load_vocabulary()
    film = gr.File(
        label="Chest X-ray: PNG, JPEG, BMP, TIFF, WebP or DICOM (deleted after analysis)",
        file_types=FILE_TYPES,
    )
    preview = gr.Image(
        label="Film as analysed (after windowing)",
        interactive=False,
        visible=False,
        height=260,
        format="png",
        buttons=["fullscreen"],
    )
    notes = gr.Textbox(
        "",
        label="Clinical notes (optional)",
        placeholder="e.g. 67M, 3 days of productive cough and fever. No chest pain. Ex-smoker.",
        lines=4,
        max_lines=12,
        max_length=settings.limits.max_note_chars,
        info="Used only for this analysis; never stored or logged.",
    )
    with gr.Accordion("Advanced options", open=False):
        findings = gr.CheckboxGroup(
            choices=[(f.name, f.id) for f in vocabulary.findings],
            value=[f.id for f in vocabulary.findings],
            label="Findings to score",
            show_select_all=True,
        )
        custom = gr.Textbox(
            "",
            label="Other findings (free text)",
            placeholder="e.g. rib fracture, hiatus hernia",
            info="Comma-separated; scored zero-shot from the words alone.",
            max_length=1000,
        )
        mode = gr.Radio(
            choices=MODES,
            value="both" if settings.probe else "zero-shot",
            label="Scoring",
            info="Zero-shot text prompts, the trained head, or both side by side.",
            visible=bool(settings.probe),
        )
        method = gr.Dropdown(
            choices=METHODS,
            value=settings.attribution_method,
            label="Attribution method",
            info="Grad-CAM takes a second; Integrated Gradients and Occlusion are slow: tens of seconds.",
        )
        maps = gr.Slider(
            0, MAX_MAPS, value=min(settings.top_k_maps, MAX_MAPS), step=1, label="Number of maps"
        )
        threshold = gr.Slider(
            0,
            0.99,
            value=0,
            step=0.01,
            label="Threshold override",
            info="0 keeps each finding's own threshold; otherwise one threshold for all findings.",
        )
    return {
        "film": film,
        "preview": preview,
        "notes": notes,
        "findings": findings,
        "custom_findings": custom,
        "scoring_mode": mode,
        "attribution_method": method,
        "maps": maps,
        "threshold": threshold,
    }


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The meddx page and its API (``/analyze``, ``/notes``) for one `Settings`."""
    settings = settings or Settings.from_env()
    service = _Service(settings)
    with gr.Blocks(
        title="meddx · chest X-ray triage support", analytics_enabled=False, delete_cache=CACHE_SWEEP
    ) as demo:
        gr.HTML(BANNER, js_on_load=None)
        gr.Markdown(
            "# meddx\nChest X-ray triage support: finding scores, evidence from your notes, and where the "
            "model looked.",
            elem_classes="meddx-title",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                inputs = _input_column(settings)
                with gr.Row():
                    notes_button = gr.Button("Check notes", variant="secondary", size="md")
                    analyze_button = gr.Button("Analyze", variant="primary", size="md")
                notes_view = gr.HighlightedText(
                    label="What meddx read in the notes",
                    color_map=STATUS_COLOURS,
                    show_legend=True,
                    show_inline_category=False,
                    visible=False,
                    elem_id="meddx-notes",
                )
                concepts = gr.JSON(label="Concepts (JSON)", visible=False)
            with gr.Column(scale=3, min_width=300):
                top = gr.Label(
                    label="Top findings (model scores, not diagnoses)",
                    num_top_classes=TOP_LABELS,
                    show_heading=False,
                    elem_id="meddx-top",
                )
                annotated = gr.AnnotatedImage(
                    label="Where the model looked",
                    format="png",
                    show_legend=True,
                    height=520,
                    elem_id="meddx-annotated",
                )
        report = gr.Markdown(
            "*Upload a film and press Analyze; the report appears here.*",
            elem_classes="meddx-report",
            elem_id="meddx-report",
            latex_delimiters=[],
            container=True,
            padding=True,
        )
        downloads = gr.File(
            label="Download the report (HTML, JSON)", file_count="multiple", interactive=False, visible=False
        )
        with gr.Accordion("Result as JSON (what /analyze returns)", open=False):
            result = gr.JSON(label="Result")
        with gr.Accordion("Model and privacy", open=False):
            model_info = gr.Markdown(_model_markdown(settings))

        api_inputs = [
            inputs[name] for name in inspect.signature(service.analyze_film).parameters if name in inputs
        ]
        analyze_button.click(
            service.analyze_for_page,
            inputs=api_inputs,
            outputs=[
                top,
                annotated,
                inputs["preview"],
                report,
                result,
                downloads,
                model_info,
                inputs["film"],
                notes_view,
            ],
            api_visibility="private",
            concurrency_id="analyze",
            preprocess=False,
        )
        gr.on(
            triggers=[],  # API and MCP only: the page uses the private event above
            fn=service.analyze_film,
            inputs=api_inputs,
            outputs=[result, report],
            api_name="analyze",
            concurrency_id="analyze",
            preprocess=False,
        )
        notes_button.click(
            service.read_notes, inputs=inputs["notes"], outputs=concepts, api_name="notes"
        ).success(
            lambda text, found: _highlight(text, found["concepts"]),
            inputs=[inputs["notes"], concepts],
            outputs=notes_view,
            api_visibility="private",
        )
    return demo


def queue_kwargs() -> dict[str, Any]:
    """Arguments for ``demo.queue``: two analyses at a time, a bounded waiting line."""
    return {"default_concurrency_limit": 2, "max_size": 16}


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for ``demo.launch``: look, upload limit, API/MCP exposure and privacy switches."""
    return {
        "theme": gr.themes.Soft(primary_hue="blue", neutral_hue="slate"),
        "css": CSS,
        "max_file_size": f"{settings.limits.max_file_mb}mb",
        "mcp_server": importlib.util.find_spec("mcp") is not None,
        "footer_links": ["api", "gradio", "settings"],
        "run_history": False,
        "enable_monitoring": False,
        "ssr_mode": False,
    }


__all__ = ["build_demo", "launch_kwargs", "queue_kwargs"]
