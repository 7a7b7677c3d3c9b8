"""Clinician feedback on the page and the ``/feedback`` endpoint, only when ``MEDDX_FEEDBACK_DIR`` is set.

After each analysis the page shows, per finding scored, "present / absent / not sure", a "missed findings"
list from the vocabulary and a Send button, under a notice that says what is kept and what never is
(`meddx.train.feedback.KEPT_SUMMARY`). The result JSON then carries a ``feedback_id``; ``/feedback`` takes
(feedback_id, labels, missed) and returns the record as written. The film's embedding and scores wait in
memory (`meddx.train.feedback.FeedbackDesk`) until answered, for an hour at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from meddx.app.handlers import shown_errors
from meddx.config import Settings
from meddx.errors import InputError
from meddx.model.vocabulary import load_vocabulary
from meddx.train.feedback import (
    KEPT_SUMMARY,
    LABELS,
    NEVER_KEPT_SUMMARY,
    FeedbackDesk,
    open_feedback,
)


def notice(settings: Settings) -> str:
    """What the page says before anything is sent."""
    where = (
        f"the operator's private Hugging Face dataset `{settings.feedback_repo}` (and this server's disk)"
        if settings.feedback_repo
        else "this server's disk"
    )
    return (
        f"**Feedback is optional and goes to {where}, to retrain the model's trained head.** "
        f"If you press Send, meddx keeps {KEPT_SUMMARY}. It never keeps {NEVER_KEPT_SUMMARY}. "
        "Answer only what you are sure of; leave the rest blank."
    )


def open_desk(settings: Settings, *, api=None) -> FeedbackDesk | None:
    """The app's feedback desk (None when ``MEDDX_FEEDBACK_DIR`` is unset), for the loaded model."""
    from meddx.model.encoder import load_encoder
    from meddx.model.head import encoder_identity

    writer = open_feedback(settings, api=api)
    if writer is None:
        return None
    encoder = load_encoder(settings.model, threads=settings.threads, device=settings.device)
    return FeedbackDesk(writer, encoder_identity(encoder).to_dict())


@dataclass
class FeedbackPanel:
    """The feedback components, by name; ``answers`` holds one radio per vocabulary finding."""

    box: gr.Column
    notice: gr.Markdown
    feedback_id: gr.Textbox
    answers: dict[str, gr.Radio]
    missed: gr.Dropdown
    send: gr.Button
    status: gr.Markdown
    api_id: gr.Textbox
    api_labels: gr.JSON
    api_missed: gr.Dropdown
    api_result: gr.JSON

    @property
    def shown_outputs(self) -> list[gr.components.Component]:
        """What a new result changes."""
        return [self.box, self.feedback_id, *self.answers.values(), self.missed, self.send, self.status]


def build_panel(settings: Settings) -> FeedbackPanel:
    """The feedback components inside the current Blocks (hidden until a result is shown)."""
    vocabulary = load_vocabulary()
    with gr.Column(visible=False, elem_id="meddx-feedback") as box:
        gr.Markdown("### Was this result right? (optional feedback)")
        notice_md = gr.Markdown(notice(settings), elem_id="meddx-feedback-notice")
        feedback_id = gr.Textbox(visible=False)
        answers = {}
        with gr.Row(equal_height=False):  # wraps: three answers a row on a desktop, one on a phone
            for finding in vocabulary.findings:
                answers[finding.id] = gr.Radio(
                    list(LABELS),
                    value=None,
                    label=finding.name,
                    visible=False,
                    min_width=280,
                    elem_id=f"meddx-answer-{finding.id}",
                )
        missed = gr.Dropdown(
            [(f.name, f.id) for f in vocabulary.findings],
            value=[],
            multiselect=True,
            label="Missed findings (present on the film, not flagged)",
            elem_id="meddx-missed",
        )
        send = gr.Button("Send feedback", variant="secondary", elem_id="meddx-send-feedback")
        status = gr.Markdown("", elem_id="meddx-feedback-status")
    api_id = gr.Textbox(visible=False)
    api_labels = gr.JSON(visible=False)
    api_missed = gr.Dropdown([f.id for f in vocabulary.findings], value=[], multiselect=True, visible=False)
    api_result = gr.JSON(visible=False)
    return FeedbackPanel(
        box, notice_md, feedback_id, answers, missed, send, status, api_id, api_labels, api_missed, api_result
    )


def _labels(value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(
                "labels must be a JSON object: finding id -> present, absent or not sure."
            ) from None
    if not isinstance(value, dict):
        raise InputError("labels must be an object: finding id -> present, absent or not sure.")
    return value


class FeedbackHandlers:
    """The panel's events and the ``/feedback`` endpoint, for one desk and one panel."""

    def __init__(self, desk: FeedbackDesk, panel: FeedbackPanel) -> None:
        self.desk = desk
        self.panel = panel

    def show(self, result: dict) -> dict:
        """After Analyze: one radio per scored vocabulary finding (with its score), all blank."""
        panel = self.panel
        scored = {f["id"]: f for f in (result or {}).get("findings", [])}
        shown: dict = {
            panel.box: gr.Column(visible=bool(result and result.get("feedback_id"))),
            panel.feedback_id: (result or {}).get("feedback_id", ""),
            panel.missed: gr.Dropdown(value=[]),
            panel.send: gr.Button(interactive=True),
            panel.status: "",
        }
        for finding_id, radio in panel.answers.items():
            finding = scored.get(finding_id)
            label = f"{finding['label']} (score {finding['probability']:.2f})" if finding else None
            shown[radio] = gr.Radio(value=None, visible=finding is not None, label=label)
        return shown

    def send_from_page(self, values: dict[Any, Any]) -> dict:
        """The page's Send button: the answers given become one record."""
        panel = self.panel
        labels = {fid: values[radio] for fid, radio in panel.answers.items() if values[radio]}
        with shown_errors("keeping the feedback"):
            record = self.desk.answer(values[panel.feedback_id], labels, values[panel.missed] or [])
        answered = len(record["labels"]) + len(record["missed"])
        return {
            panel.status: (
                f"Thank you: {answered} answer(s) kept as record `{record['id'][:8]}`, with the fields "
                f"{', '.join(record)}. Nothing else was kept."
            ),
            panel.send: gr.Button(interactive=False),
        }

    def give_feedback(self, feedback_id: str, labels: Any = None, missed: list[str] | None = None) -> dict:
        """Tell meddx whether a result was right, to retrain its trained head later.

        Keeps the film's image embedding (numbers from the image model, not the image), the scores shown,
        the answers, the scoring mode, the model and meddx versions, a random id and the UTC date. Never
        keeps the image, notes, file names, DICOM tags, IP addresses or session ids.

        Args:
            feedback_id: the ``feedback_id`` of an ``/analyze`` result (valid for an hour, answered once).
            labels: finding id -> "present", "absent" or "not sure", e.g. {"effusion": "present"}.
            missed: finding ids present on the film that the result did not flag, e.g. ["pneumothorax"].

        Returns:
            The record as kept (its fields are exactly the ones listed above).
        """
        with shown_errors("keeping the feedback"):
            return self.desk.answer(feedback_id, _labels(labels), missed or [])


def wire(demo_events: Any, handlers: FeedbackHandlers, result: gr.JSON) -> None:
    """Connect the panel: ``demo_events`` is the page's Analyze event (its ``.success`` shows the panel)."""
    panel = handlers.panel
    demo_events.success(
        handlers.show, inputs=result, outputs=panel.shown_outputs, api_visibility="private", queue=False
    )
    panel.send.click(
        handlers.send_from_page,
        inputs={panel.feedback_id, panel.missed, *panel.answers.values()},
        outputs=[panel.status, panel.send],
        api_visibility="private",
    )
    gr.on(
        triggers=[],  # API and MCP only
        fn=handlers.give_feedback,
        inputs=[panel.api_id, panel.api_labels, panel.api_missed],
        outputs=panel.api_result,
        api_name="feedback",
    )
