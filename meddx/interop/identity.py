"""Who wrote a result, and the UIDs of what meddx stores in a study, derived rather than random.

The SR and overlay series of a study, and the instance written for each source film, get UIDs derived from
the source's UIDs and the `results_key` (model spec and revision, trained head spec and revision): storing
the same result twice replaces it instead of adding a copy, and a PACS can be asked whether a study already
holds meddx's result for this model (`meddx.interop.dicomweb`) without reading anything back.
"""

from __future__ import annotations

from pydicom.uid import generate_uid

from meddx import __version__

DEVICE_NAME = "meddx"
MANUFACTURER = "meddx (open-source research software)"
SR_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "meddx findings: research output, not for diagnosis"
OVERLAY_SERIES_DESCRIPTION = "meddx attribution overlay: research output, not for diagnosis"


def results_key(
    model_spec: str,
    model_revision: str | None,
    probe_spec: str | None = None,
    probe_revision: str | None = None,
) -> str:
    """The model (and trained head) a result comes from, with their revisions: one SR series per key."""
    key = f"model={model_spec}@{model_revision or 'unversioned'}"
    if probe_spec:
        key += f";head={probe_spec}@{probe_revision or 'unversioned'}"
    return key


def derived_uid(*parts: str) -> str:
    """A UID that depends only on ``parts`` (pydicom's root; SHA-512 of the parts)."""
    return generate_uid(entropy_srcs=["meddx", *parts])


def sr_series_uid(study_uid: str, key: str) -> str:
    return derived_uid("sr-series", study_uid, key)


def sr_instance_uid(source_sop_uid: str, key: str) -> str:
    return derived_uid("sr", source_sop_uid, key)


def overlay_series_uid(study_uid: str, key: str) -> str:
    return derived_uid("overlay-series", study_uid, key)


def overlay_instance_uid(source_sop_uid: str, key: str) -> str:
    return derived_uid("overlay", source_sop_uid, key)


def device_uid(key: str) -> str:
    """The observer device's UID in an SR: one per meddx version and model."""
    return derived_uid("device", __version__, key)
