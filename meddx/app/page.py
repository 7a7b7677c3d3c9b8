"""The Gradio page: a Blocks layout for people, and two API/MCP endpoints (``/analyze``, ``/notes``) for
programs, plus ``/feedback`` and the feedback panel when ``MEDDX_FEEDBACK_DIR`` is set. Components are held
by name in one `Page`; the events are wired by name (`meddx.app.handlers`).

Examples come from ``MEDDX_EXAMPLES`` (`meddx.app.examples`): no openly licensed chest film ships with the
repository, so without the setting (or when it cannot be reached) the page has none.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from meddx import log_hygiene
from meddx.app import mcp_json, views
from meddx.app.examples import find_examples
from meddx.app.feedback import FeedbackHandlers, FeedbackPanel, build_panel, open_desk
from meddx.app.feedback import wire as wire_feedback
from meddx.app.guards import MeddxBlocks, install_robust_cache_sweep
from meddx.app.handlers import API_PARAMETERS, Handlers
from meddx.app.interop import wire_fhir
from meddx.app.style import BANNER, CSS, JS, RANDOM_WEIGHTS_BANNER, SCROLL_TO_RESULTS
from meddx.app.workflow import NO_FILM, NO_FILM_EXAMPLES, REPORT_PLACEHOLDER, PageFlow, method_choices
from meddx.config import Settings
from meddx.explain.methods import MAX_MAPS
from meddx.io.sniff import UPLOAD_SUFFIXES
from meddx.model.modes import MODES
from meddx.model.vocabulary import load_vocabulary


@dataclass
class Page:
    """Every component the events read or write, by name (the inputs by their ``/analyze`` names)."""

    film: gr.File
    case: gr.Markdown
    preview: gr.Image
    notes: gr.Textbox
    findings: gr.CheckboxGroup
    custom_findings: gr.Textbox
    scoring_mode: gr.Radio
    attribution_method: gr.Dropdown
    maps: gr.Slider
    threshold: gr.Slider
    new_patient: gr.Button
    notes_button: gr.Button
    analyze_button: gr.Button
    notes_view: gr.HighlightedText
    concepts: gr.JSON
    status: gr.HTML
    stale: gr.HTML
    gallery: gr.Gallery
    map_notes: gr.HTML
    map_controls: gr.Row
    map_for: gr.Dropdown
    map_button: gr.Button
    findings_table: gr.HTML
    report: gr.Markdown
    downloads: gr.File
    result: gr.JSON
    model_info: gr.Markdown
    example_name: gr.Textbox
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
        """What the page's events may change: every view of a result, and the film, notes and case."""
        outputs = [
            self.film,
            self.case,
            self.preview,
            self.notes,
            self.notes_view,
            self.concepts,
            self.status,
            self.stale,
            self.gallery,
            self.map_notes,
            self.map_controls,
            self.map_for,
            self.findings_table,
            self.report,
            self.result,
            self.downloads,
            self.model_info,
        ]
        if self.feedback is not None:
            outputs.append(self.feedback.box)
        return outputs


def _input_column(settings: Settings, *, has_examples: bool) -> dict[str, Any]:
    """Upload, notes and the advanced options, by name."""
    vocabulary = load_vocabulary()
    components: dict[str, Any] = {}
    components["film"] = gr.File(
        label="Chest X-ray: PNG, JPEG, BMP, TIFF, WebP or DICOM (read, then deleted)",
        file_types=list(UPLOAD_SUFFIXES),
        elem_id="meddx-film",
    )
    components["case"] = gr.Markdown(NO_FILM_EXAMPLES if has_examples else NO_FILM, elem_id="meddx-case")
    components["preview"] = gr.Image(
        label="Film as read (after windowing)",
        interactive=False,
        visible=False,
        height=260,
        format="png",
        buttons=["fullscreen"],
        elem_id="meddx-preview",
    )
    components["notes"] = gr.Textbox(
        "",
        label="Clinical notes (optional)",
        placeholder="e.g. 67M, 3 days of productive cough and fever. No chest pain. Ex-smoker.",
        lines=4,
        max_lines=12,  # no max_length: longer notes are refused with the API's sentence, never cut silently
        info=f"Used only for this analysis; never stored or logged; up to {settings.limits.max_note_chars:,} "
        "characters. Ctrl+Enter analyses.",
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
        maps = min(settings.top_k_maps, MAX_MAPS)
        components["attribution_method"] = gr.Dropdown(
            choices=method_choices(maps),
            value=settings.attribution_method,
            label="Attribution method",
            info="The time one analysis takes with the chosen number of maps, measured on this server.",
            elem_id="meddx-method",
        )
        components["maps"] = gr.Slider(
            0,
            MAX_MAPS,
            value=maps,
            step=1,
            label="Number of maps",
            info="For the top findings by image score",
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


def _layout(settings: Settings, examples: dict[str, Path]) -> Page:
    """Build the page's components inside the current Blocks; returns them by name."""
    vocabulary = load_vocabulary()
    gr.HTML(BANNER + (RANDOM_WEIGHTS_BANNER if views.random_weights(settings) else ""))
    gr.Markdown(
        "# meddx\nChest X-ray triage support: finding scores from the image, what your notes change, and "
        "where the model looked.",
        elem_classes="meddx-title",
    )
    example_name = gr.Textbox(visible=False, label="Example film")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            inputs = _input_column(settings, has_examples=bool(examples))
            if examples:
                gr.Examples(
                    examples=[[name] for name in examples],
                    inputs=[example_name],
                    label="Example films (generated or openly licensed; not your patients)",
                    cache_examples=False,
                    api_visibility="private",
                )
            with gr.Row():
                new_patient = gr.Button("New patient", variant="secondary", size="md", elem_id="meddx-new")
                notes_button = gr.Button("Check notes", variant="secondary", size="md")
                analyze_button = gr.Button("Analyze", variant="primary", size="md", elem_id="meddx-analyze")
            stale = gr.HTML("", elem_id="meddx-stale")  # under the notes being edited, above the results
            notes_view = gr.HighlightedText(
                label="What meddx read in the notes",
                color_map=views.STATUS_COLOURS,
                show_legend=False,  # each span then carries its status in words (a sign and a word)
                show_inline_category=True,
                visible=False,
                elem_id="meddx-notes",
            )
            concepts = gr.JSON(label="Concepts (JSON)", visible=False)
        with gr.Column(scale=3, min_width=300, elem_id="meddx-results"):
            status = gr.HTML("", elem_id="meddx-status")
            findings_table = gr.HTML("", elem_id="meddx-findings")
            gallery = gr.Gallery(
                label="Where the model looked: one map per finding (brighter raised the image score more)",
                visible=False,
                preview=True,
                allow_preview=True,
                columns=5,
                height=560,
                object_fit="contain",
                format="png",
                buttons=["fullscreen"],
                elem_id="meddx-maps",
            )
            map_notes = gr.HTML("", elem_id="meddx-map-captions")
            with gr.Row(equal_height=True, visible=False, elem_id="meddx-map-controls") as map_controls:
                map_for = gr.Dropdown(
                    choices=[(f.name, f.id) for f in vocabulary.findings],
                    value=[],
                    multiselect=True,
                    max_choices=MAX_MAPS,
                    label="Map these findings instead",
                    scale=3,
                    elem_id="meddx-map-for",
                )
                map_button = gr.Button("Draw maps for these", size="md", scale=1, elem_id="meddx-map-button")
    with gr.Accordion("Report (what the downloads hold)", open=False, elem_id="meddx-report-panel"):
        report = gr.Markdown(
            REPORT_PLACEHOLDER,
            label="Report (Markdown)",
            elem_classes="meddx-report",
            elem_id="meddx-report",
            latex_delimiters=[],
            container=True,
            padding=True,
        )
    feedback = build_panel(settings) if settings.feedback_dir else None
    downloads = gr.File(
        label="Download the report (HTML, JSON)",
        file_count="multiple",
        interactive=False,
        visible=False,
        elem_id="meddx-downloads",
    )
    with gr.Accordion("Result as JSON (what /analyze returns)", open=False):
        result = gr.JSON(label="Result")
    with gr.Accordion("Model and privacy", open=False):
        model_info = gr.Markdown(views.model_markdown(settings))
    return Page(
        **inputs,
        new_patient=new_patient,
        notes_button=notes_button,
        analyze_button=analyze_button,
        notes_view=notes_view,
        concepts=concepts,
        status=status,
        stale=stale,
        gallery=gallery,
        map_notes=map_notes,
        map_controls=map_controls,
        map_for=map_for,
        map_button=map_button,
        findings_table=findings_table,
        report=report,
        downloads=downloads,
        result=result,
        model_info=model_info,
        example_name=example_name,
        feedback=feedback,
    )


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The meddx page and its API (``/analyze``, ``/notes``) for one `Settings`."""
    settings = settings or Settings.from_env()
    log_hygiene.install()
    install_robust_cache_sweep()
    mcp_json.install()  # MCP answers as JSON text, not Python reprs
    examples = find_examples(settings.examples)
    with MeddxBlocks(
        title="meddx · chest X-ray triage support", analytics_enabled=False, delete_cache=views.CACHE_SWEEP
    ) as demo:
        page = _layout(settings, examples)
        handlers = Handlers(settings, page)
        flow = PageFlow(handlers, page, examples)
        demo.meddx_on_close.append(handlers.uploads.close)
        private = {"api_visibility": "private"}
        page.film.upload(
            flow.receive_film,
            inputs=[page.film, page.notes],
            outputs=page.page_outputs,
            preprocess=False,
            **private,
        )
        page.film.clear(flow.film_cleared, outputs=page.page_outputs, **private)
        page.new_patient.click(flow.new_patient, outputs=page.page_outputs, **private)
        page.example_name.change(
            flow.receive_example,
            inputs=[page.example_name, page.notes],
            outputs=[*page.page_outputs, page.example_name],
            **private,
        )
        demo.unload(flow.forget)
        analyzed = page.analyze_button.click(
            flow.analyze_for_page,
            inputs=set(page.api_inputs),
            outputs=page.page_outputs,
            concurrency_id="analyze",
            preprocess=False,
            **private,
        )
        mapped = page.map_button.click(
            flow.map_chosen,
            inputs={*page.api_inputs, page.map_for},
            outputs=page.page_outputs,
            concurrency_id="analyze",
            preprocess=False,
            **private,
        )
        for event in (analyzed, mapped):
            event.then(None, js=SCROLL_TO_RESULTS).then(
                flow.method_menu, inputs=page.maps, outputs=page.attribution_method, **private
            )
        page.maps.change(flow.method_menu, inputs=page.maps, outputs=page.attribution_method, **private)
        page.notes.input(
            flow.notes_changed,
            inputs=page.notes,
            outputs=page.stale,
            trigger_mode="always_last",
            show_progress="hidden",
            queue=False,
            **private,
        )
        gr.on(
            triggers=[],  # API and MCP only: the page uses the private events above
            fn=handlers.analyze_film,
            inputs=page.api_inputs,
            outputs=[page.result, page.report],
            api_name="analyze",
            concurrency_id="analyze",
            preprocess=False,
        )
        wire_fhir(handlers, page)  # /fhir: the result as a FHIR R4 Bundle (API and MCP only)
        page.notes_button.click(  # raw value: a list or number is refused, not turned into its text
            handlers.read_notes, inputs=page.notes, outputs=page.concepts, api_name="notes", preprocess=False
        ).success(
            handlers.show_notes,
            inputs={page.notes, page.concepts},
            outputs=page.notes_view,
            **private,
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
        "js": JS,
        "max_file_size": f"{settings.limits.max_file_mb}mb",
        "mcp_server": importlib.util.find_spec("mcp") is not None,
        "footer_links": ["api", "gradio", "settings"],
        "run_history": False,
        "enable_monitoring": False,
        "ssr_mode": False,
    }
