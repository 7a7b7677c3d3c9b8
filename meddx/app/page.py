"""The Gradio page: a Blocks layout for people, and two API/MCP endpoints (``/analyze``, ``/notes``) for
programs, plus ``/feedback`` and the feedback panel when ``MEDDX_FEEDBACK_DIR`` is set. Components are held
by name in one `Page`; the events are wired by name (`meddx.app.handlers`).

There are no examples: no openly licensed chest film ships with the repository.
"""

from __future__ import annotations

import html
import importlib.util
from dataclasses import dataclass
from typing import Any

import gradio as gr

from meddx import DISCLAIMER, log_hygiene
from meddx.app import views
from meddx.app.feedback import FeedbackHandlers, FeedbackPanel, build_panel, open_desk
from meddx.app.feedback import wire as wire_feedback
from meddx.app.guards import MeddxBlocks, install_robust_cache_sweep
from meddx.app.handlers import API_PARAMETERS, Handlers
from meddx.config import Settings
from meddx.explain.maps import METHOD_NAMES
from meddx.io.sniff import UPLOAD_SUFFIXES
from meddx.model.head import MODES
from meddx.model.vocabulary import load_vocabulary
from meddx.pipeline import MAX_MAPS

METHOD_COST = {
    "gradcam": "fast, about a second",
    "gradient_shap": "slow, several seconds",
    "integrated_gradients": "slow, tens of seconds",
    "occlusion": "slowest, tens of seconds or more",
}
"""How long each attribution method takes on a CPU, as the method menu says it (in this order)."""
TOP_LABELS = 5
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


@dataclass
class Page:
    """Every component the events read or write, by name (the inputs by their ``/analyze`` names)."""

    film: gr.File
    preview: gr.Image
    notes: gr.Textbox
    findings: gr.CheckboxGroup
    custom_findings: gr.Textbox
    scoring_mode: gr.Radio
    attribution_method: gr.Dropdown
    maps: gr.Slider
    threshold: gr.Slider
    notes_button: gr.Button
    analyze_button: gr.Button
    notes_view: gr.HighlightedText
    concepts: gr.JSON
    top: gr.Label
    annotated: gr.AnnotatedImage
    report: gr.Markdown
    downloads: gr.File
    result: gr.JSON
    model_info: gr.Markdown
    feedback: FeedbackPanel | None = None
    """The feedback panel, when ``MEDDX_FEEDBACK_DIR`` is set (`meddx.app.feedback`)."""

    def input(self, name: str) -> gr.components.Component:
        """The component behind one ``/analyze`` parameter."""
        if name not in API_PARAMETERS:
            raise KeyError(name)
        return getattr(self, name)

    @property
    def api_inputs(self) -> list[gr.components.Component]:
        """``/analyze``'s inputs, in parameter order."""
        return [self.input(name) for name in API_PARAMETERS]

    @property
    def page_outputs(self) -> list[gr.components.Component]:
        """What the page's Analyze button may change."""
        return [
            self.top,
            self.annotated,
            self.preview,
            self.report,
            self.result,
            self.downloads,
            self.model_info,
            self.film,
            self.notes_view,
        ]


def _input_column(settings: Settings) -> dict[str, Any]:
    """Upload, notes and the advanced options, by name."""
    vocabulary = load_vocabulary()
    components: dict[str, Any] = {}
    components["film"] = gr.File(
        label="Chest X-ray: PNG, JPEG, BMP, TIFF, WebP or DICOM (deleted after analysis)",
        file_types=list(UPLOAD_SUFFIXES),
    )
    components["preview"] = gr.Image(
        label="Film as analysed (after windowing)",
        interactive=False,
        visible=False,
        height=260,
        format="png",
        buttons=["fullscreen"],
    )
    components["notes"] = gr.Textbox(
        "",
        label="Clinical notes (optional)",
        placeholder="e.g. 67M, 3 days of productive cough and fever. No chest pain. Ex-smoker.",
        lines=4,
        max_lines=12,
        max_length=settings.limits.max_note_chars,
        info="Used only for this analysis; never stored or logged.",
    )
    with gr.Accordion("Advanced options", open=False):
        components["findings"] = gr.CheckboxGroup(
            choices=[(f.name, f.id) for f in vocabulary.findings],
            value=[f.id for f in vocabulary.findings],
            label="Findings to score",
            show_select_all=True,
        )
        components["custom_findings"] = gr.Textbox(
            "",
            label="Other findings (free text)",
            placeholder="e.g. rib fracture, hiatus hernia",
            info="Comma-separated; scored zero-shot from the words alone.",
            max_length=1000,
        )
        components["scoring_mode"] = gr.Radio(
            choices=list(MODES),
            value="both" if settings.probe else "zero-shot",
            label="Scoring",
            info="Zero-shot text prompts, the trained head, or both side by side.",
            visible=bool(settings.probe),
        )
        components["attribution_method"] = gr.Dropdown(
            choices=[(f"{METHOD_NAMES[m]} ({cost})", m) for m, cost in METHOD_COST.items()],
            value=settings.attribution_method,
            label="Attribution method",
            info="Grad-CAM takes a second; Integrated Gradients and Occlusion are slow: tens of seconds.",
        )
        components["maps"] = gr.Slider(
            0, MAX_MAPS, value=min(settings.top_k_maps, MAX_MAPS), step=1, label="Number of maps"
        )
        components["threshold"] = gr.Slider(
            0,
            0.99,
            value=0,
            step=0.01,
            label="Threshold override",
            info="0 keeps each finding's own threshold; otherwise one threshold for all findings.",
        )
    return components


def _layout(settings: Settings) -> Page:
    """Build the page's components inside the current Blocks; returns them by name."""
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
                color_map=views.STATUS_COLOURS,
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
    feedback = build_panel(settings) if settings.feedback_dir else None
    downloads = gr.File(
        label="Download the report (HTML, JSON)", file_count="multiple", interactive=False, visible=False
    )
    with gr.Accordion("Result as JSON (what /analyze returns)", open=False):
        result = gr.JSON(label="Result")
    with gr.Accordion("Model and privacy", open=False):
        model_info = gr.Markdown(views.model_markdown(settings))
    return Page(
        **inputs,
        notes_button=notes_button,
        analyze_button=analyze_button,
        notes_view=notes_view,
        concepts=concepts,
        top=top,
        annotated=annotated,
        report=report,
        downloads=downloads,
        result=result,
        model_info=model_info,
        feedback=feedback,
    )


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The meddx page and its API (``/analyze``, ``/notes``) for one `Settings`."""
    settings = settings or Settings.from_env()
    log_hygiene.install()
    install_robust_cache_sweep()
    with MeddxBlocks(
        title="meddx · chest X-ray triage support", analytics_enabled=False, delete_cache=views.CACHE_SWEEP
    ) as demo:
        page = _layout(settings)
        handlers = Handlers(settings, page)
        demo.meddx_on_close.append(handlers.uploads.close)
        analyzed = page.analyze_button.click(
            handlers.analyze_for_page,
            inputs=set(page.api_inputs),
            outputs=page.page_outputs,
            api_visibility="private",
            concurrency_id="analyze",
            preprocess=False,
        )
        gr.on(
            triggers=[],  # API and MCP only: the page uses the private event above
            fn=handlers.analyze_film,
            inputs=page.api_inputs,
            outputs=[page.result, page.report],
            api_name="analyze",
            concurrency_id="analyze",
            preprocess=False,
        )
        page.notes_button.click(  # raw value: a list or number is refused, not turned into its text
            handlers.read_notes, inputs=page.notes, outputs=page.concepts, api_name="notes", preprocess=False
        ).success(
            handlers.show_notes,
            inputs={page.notes, page.concepts},
            outputs=page.notes_view,
            api_visibility="private",
        )
        if page.feedback is not None:
            handlers.feedback = open_desk(settings)
            wire_feedback(analyzed, FeedbackHandlers(handlers.feedback, page.feedback), page.result)
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
