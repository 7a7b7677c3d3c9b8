"""``/fhir`` on the HTTP and MCP API: the analysis of one film as a FHIR R4 Bundle (`meddx.interop.fhir`).

The same inputs, checks, time budget and upload handling as ``/analyze`` (`Handlers._analysis`); the answer
holds no identifier but the DICOM study's UID (when the film is DICOM). The DICOM SR is not offered here:
it must repeat the film's patient attributes, and the API promises never to return DICOM identifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from meddx.app.handlers import AnalyzeRequest, Handlers, shown_errors

if TYPE_CHECKING:
    from meddx.app.page import Page


def wire_fhir(handlers: Handlers, page: Page) -> None:
    """Register ``/fhir`` (API and MCP only; the page does not use it)."""

    def fhir_report(
        film: dict,
        notes: str = "",
        findings: list[str] | None = None,
        custom_findings: str = "",
        scoring_mode: str = "zero-shot",
        attribution_method: str = "gradcam",
        maps: int = 3,
        threshold: float = 0.0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented idiom)
    ) -> dict:
        """Score findings on one chest X-ray as /analyze does, and return the result as a FHIR R4 Bundle.

        The Bundle (type collection) holds a DiagnosticReport (status preliminary, category imaging, a
        conclusion with the disclaimer) and one Observation per finding (the probability as value, an
        interpretation only when flagged, the model as method). For a DICOM film the report and the
        observations reference the study by its Study Instance UID; nothing else identifies anyone.
        Research output, not a diagnosis. The uploaded file is deleted after the call.

        Args:
            film: the chest X-ray file (PNG, JPEG, BMP, TIFF, WebP or DICOM).
            notes: optional free-text clinical notes or history in English; never logged or stored.
            findings: finding ids to score, e.g. ["effusion", "pneumothorax"]; default: all.
            custom_findings: optional extra findings in plain words, comma-separated.
            scoring_mode: "zero-shot", "fine-tuned" or "both"; the last two need a trained head.
            attribution_method: "gradcam" (fast), "gradient_shap", "integrated_gradients" or "occlusion".
            maps: how many of the top findings get a map and regions, 0 to 5.
            threshold: one flagging threshold for all findings, in (0, 1); 0 keeps each finding's own.

        Returns:
            The FHIR R4 Bundle as JSON
        """
        from meddx.interop.fhir import bundle_json

        with shown_errors("analysing the film"):
            request = AnalyzeRequest(
                film, notes, findings, custom_findings, scoring_mode, attribution_method, maps, threshold
            )
            analysis, _ = handlers._analysis(request, progress)
            bundle = bundle_json(analysis)
        return {page.result: bundle}

    gr.on(
        triggers=[],
        fn=fhir_report,
        inputs=page.api_inputs,
        outputs=[page.result],
        api_name="fhir",
        concurrency_id="analyze",
        preprocess=False,
    )
