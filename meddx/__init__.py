"""meddx: decision support for chest X-ray triage.

Scores findings on a chest X-ray with a CLIP-style image-text model, reads clinical notes, explains
where the image evidence lies and writes a templated report. It supports a clinician's reading; it is
not a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "meddx is research decision support, not a diagnosis. Scores are model outputs from the weights "
    "named in this report, not measured clinical accuracy; a qualified clinician must review the image "
    "and make every clinical decision."
)
