"""The scoring modes and the rule each states (`meddx.model.head.combine` computes them); no model needed."""

from __future__ import annotations

MODES = ("zero-shot", "fine-tuned", "both")
"""The scoring modes (`combine`); the last two need a trained head."""
MODE_RULES = {
    "zero-shot": (
        "per finding, a two-way softmax of the image's similarity to positive vs negative prompt ensembles, "
        "scaled by the model's logit scale; not calibrated on clinical data"
    ),
    "fine-tuned": (
        "the trained head's calibrated probability (Platt scaling on its validation split); findings "
        "the head does not cover fall back to zero-shot"
    ),
    "both": (
        "the mean of the zero-shot and fine-tuned probabilities in log-odds space; findings the head "
        "does not cover fall back to zero-shot"
    ),
}
