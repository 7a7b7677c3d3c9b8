"""The attribution methods by name, and how many maps one analysis draws at most; no model needed (the page
and the report read these; `meddx.explain.maps` implements the methods)."""

from __future__ import annotations

METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "integrated_gradients": "Integrated Gradients",
    "gradient_shap": "Gradient SHAP",
    "occlusion": "Occlusion",
}
"""Each method's name in words, as reports and the page show it."""
DEFAULT_METHOD = "gradcam"
FAST_METHODS = frozenset({"gradcam"})  # cheap enough to map all targets in one pass (one budget check)
MAX_MAPS = 5
"""The most maps one analysis draws."""
