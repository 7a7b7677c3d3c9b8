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
from meddx.app import views
from meddx.app.examples import find_examples
from meddx.app.feedback import FeedbackHandlers, FeedbackPanel, build_panel, open_desk
from meddx.app.feedback import wire as wire_feedback
from meddx.app.guards import MeddxBlocks, install_robust_cache_sweep
from meddx.app.handlers import API_PARAMETERS, Handlers
from meddx.app.interop import wire_fhir
from meddx.app.workflow import NO_FILM, REPORT_PLACEHOLDER, PageFlow, method_choices
from meddx.config import Settings
from meddx.explain.methods import MAX_MAPS
from meddx.io.sniff import UPLOAD_SUFFIXES
from meddx.model.modes import MODES
from meddx.model.vocabulary import load_vocabulary

TOP_LABELS = 5
BANNER = (
    '<div class="meddx-banner" role="note"><strong>Decision support, not a diagnosis.</strong> Scores are '
    "outputs of the model named under “Model and privacy”, not measured clinical accuracy; a qualified "
    "clinician must review the image and make every clinical decision.</div>"
)
CSS = """
.meddx-banner { background: #fff8e6; border-left: 6px solid #f0b429; border-radius: 8px;
  padding: 10px 14px; color: #3e2c00; font-size: 0.95rem; line-height: 1.45; }
.dark .meddx-banner { background: #3b2f0b; color: #fff3c4; }
.meddx-title h1 { margin: 4px 0 0; font-size: 1.6rem; }
.meddx-title p { margin: 2px 0 6px; opacity: 0.8; }
.meddx-alert { border-left: 5px solid #e8590c; background: #fff4e6; color: #5c2b00; padding: 6px 10px;
  margin: 4px 0; border-radius: 6px; }
.dark .meddx-alert { background: #3d2410; color: #ffe8cc; }
.meddx-findings { width: 100%; border-collapse: collapse; font-size: 0.92rem; }
.meddx-findings caption { text-align: left; font-weight: 600; padding: 4px 0 8px; }
.meddx-findings th, .meddx-findings td { border-bottom: 1px solid #dee2e6; padding: 6px 8px;
  vertical-align: top; text-align: left; }
.meddx-findings ul { margin: 2px 0 0 1rem; padding: 0; }
.meddx-flag { font-weight: 700; color: #c92a2a; }
.dark .meddx-flag { color: #ffa8a8; }
.meddx-muted { opacity: 0.7; }
.meddx-report { overflow-x: auto; }
.meddx-report th, .meddx-report td { word-break: normal; overflow-wrap: normal; padding: 4px 8px; }
footer { flex-wrap: wrap; }
#meddx-maps .caption { max-width: 100%; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  text-align: left; }
@media (max-width: 640px) {
  /* One card per row; short cells share a line, each named by its column. */
  .meddx-findings thead, .meddx-report thead { position: absolute; left: -9999px; }
  .meddx-findings, .meddx-findings tbody, .meddx-findings tr, .meddx-findings caption,
  .meddx-report table, .meddx-report tbody, .meddx-report tr { display: block; width: 100%; }
  .meddx-findings tr, .meddx-report tr { border: 1px solid #dee2e6; border-radius: 8px; margin: 0 0 8px;
    padding: 4px 0; }
  .meddx-findings td, .meddx-report td { display: inline-block; max-width: 100%; border: none;
    padding: 2px 10px; overflow-wrap: anywhere; vertical-align: top; }
  .meddx-findings td[data-label="Finding"], .meddx-findings td[data-label="Change from notes"] {
    display: block; }
  .meddx-findings td[data-label]::before, .meddx-report td[data-label]::before {
    content: attr(data-label) ": "; font-weight: 600; }
  .meddx-report { overflow-x: visible; }
}
@media print {
  .meddx-banner { border: 1px solid #999; }
}
"""
JS = """
() => {
  // Ctrl+Enter (Cmd+Enter) anywhere on the page presses Analyze.
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      const button = document.getElementById('meddx-analyze');
      if (button) { event.preventDefault(); button.click(); }
    }
  });
  // Report tables stack into one card per row on a phone: each cell carries its column's name.
  const label = () => document.querySelectorAll('.meddx-report table').forEach((table) => {
    const names = Array.from(table.querySelectorAll('thead th')).map((th) => th.textContent.trim());
    table.querySelectorAll('tbody tr').forEach((row) => Array.from(row.children).forEach((cell, i) => {
      if (names[i] && cell.dataset.label !== names[i]) cell.dataset.label = names[i];
    }));
  });
  new MutationObserver(label).observe(document.body, { childList: true, subtree: true });
}
"""
SCROLL_TO_RESULTS = """
() => {
  const results = document.getElementById('meddx-results');
  if (results && results.getBoundingClientRect().top > window.innerHeight * 0.5) {
    results.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }
}
"""


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
    top: gr.Label
    gallery: gr.Gallery
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
            self.top,
            self.gallery,
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


def _input_column(settings: Settings) -> dict[str, Any]:
    """Upload, notes and the advanced options, by name."""
    vocabulary = load_vocabulary()
    components: dict[str, Any] = {}
    components["film"] = gr.File(
        label="Chest X-ray: PNG, JPEG, BMP, TIFF, WebP or DICOM (read, then deleted)",
        file_types=list(UPLOAD_SUFFIXES),
        elem_id="meddx-film",
    )
    components["case"] = gr.Markdown(NO_FILM, elem_id="meddx-case")
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
        max_lines=12,
        max_length=settings.limits.max_note_chars,
        info="Used only for this analysis; never stored or logged. Ctrl+Enter analyses.",
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
    gr.HTML(BANNER)
    gr.Markdown(
        "# meddx\nChest X-ray triage support: finding scores from the image, what your notes change, and "
        "where the model looked.",
        elem_classes="meddx-title",
    )
    example_name = gr.Textbox(visible=False, label="Example film")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            inputs = _input_column(settings)
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
            top = gr.Label(
                label="Top findings from the image alone (scores, not diagnoses); click one for its map",
                num_top_classes=TOP_LABELS,
                show_heading=False,
                elem_id="meddx-top",
            )
            gallery = gr.Gallery(
                label="Where the model looked: one map per finding",
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
            with gr.Row(equal_height=True):
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
    findings_table = gr.HTML("", elem_id="meddx-findings")
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
        label="Download the report (HTML, JSON)", file_count="multiple", interactive=False, visible=False
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
        top=top,
        gallery=gallery,
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
            flow.receive_film, inputs=page.film, outputs=page.page_outputs, preprocess=False, **private
        )
        page.film.clear(flow.film_cleared, outputs=page.page_outputs, **private)
        page.new_patient.click(flow.new_patient, outputs=page.page_outputs, **private)
        page.example_name.change(
            flow.receive_example,
            inputs=page.example_name,
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
        page.top.select(flow.show_map, outputs=[page.gallery, page.map_for, page.status], **private)
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
