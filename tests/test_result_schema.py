"""The JSON an analysis returns (``/analyze``, the CLI): its key structure is pinned here, and it is built
from typed values only at the edge. Change `EXPECTED` only together with `meddx.result.SCHEMA_VERSION` and
the README's "Result JSON" section."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from PIL import Image

from meddx.pipeline import analyze
from meddx.result import SCHEMA_VERSION
from tests.helpers import write_calibration

NOTES = "58-year-old smoker, 3 weeks of cough, no fever; no pneumothorax. History of right pleural effusion."

EVIDENCE = {
    "concept": "str",
    "display": "str",
    "status": "str",
    "span": ["int"],
    "text": "str",
    "finding": "str",
    "delta_logit": "float",
    "reason": "str",
    "source": "str",
}
REGION = {"box": ["int"], "location": "str", "in_lungs": "bool|None", "score": "float"}
CONCEPT = {
    "name": "str",
    "display": "str",
    "category": "str",
    "status": "str",
    "start": "int",
    "end": "int",
    "text": "str",
    "supports": ["str"],
    "value": "float|None",
    "diastolic": "float|None",
    "unit": "str|None",
    "duration_days": "float|None",
    "words": "str",
}
EXPECTED = {
    "schema_version": "int",
    "reference": "str",
    "model": {
        "spec": "str",
        "revision": "str|None",
        "text_revision": "str|None",
        "card": {
            "family": "str",
            "licence": "str",
            "gated": "bool|str",
            "input_size": "int",
            "analysis_s": "float|None",
            "calibrated": "bool",
            "device": "str",
            "precision": "str",
        },
    },
    "scoring": {"mode": "str", "rule": "str", "probe": "None"},
    "findings": [
        {
            "id": "str",
            "label": "str",
            "kind": "str",
            "probability": "float",
            "image_probability": "float",
            "zero_shot": "float",
            "threshold": "float|None",
            "operating_point": "str|None",
            "flagged": "bool",
            "follow_up": "str",
            "follow_up_tier": "str|None",
            "custom": "bool",
            "fine_tuned": "None",
            "note_adjustment": "float",
            "notes_odds_ratio": "float",
            "evidence": [EVIDENCE],
            "regions": [REGION],
            "measurement": "str|None",
        }
    ],
    "image": {
        "source_format": "str",
        "width": "int",
        "height": "int",
        "bits_stored": "int",
        "modality": "None",
        "view_position": "None",
        "photometric_interpretation": "str",
        "pixel_spacing": "None",
        "body_part": "None",
        "frames": "int",
        "transfer_syntax": "None",
    },
    "warnings": ["str"],
    "timings": {"load_s": "float", "score_s": "float", "explain_s": "float", "total_s": "float"},
    "created": "str",
    "notes": {"concepts": [CONCEPT], "findings": {"effusion": "str", "pneumothorax": "str"}},
    "flagging": {
        "calibrated": "bool",
        "statement": "str",
        "operating_points": [{"source": "str", "spec": "str", "rule": "str", "findings": ["str"]}],
    },
    "explanation": {"method": "str", "mapped": ["str"], "location_note": "str|None"},
    "anatomy": {
        "lung_fields": "bool",
        "chest_film": "bool",
        "reasons": ["str"],
        "ctr": "None",  # the test's film has no plausible lungs; tests/test_anatomy_surfaces.py has the CTR
        "model": "str",
    },
    "disclaimer": "str",
    "version": "str",
}


def _type(value) -> str:
    return "None" if value is None else "float" if isinstance(value, float) else type(value).__name__


def structure(value, expected):
    """``value``'s shape in the notation of `EXPECTED`: dicts by key, lists by the union of their items,
    leaves by type name. ``"a|b"`` in ``expected`` accepts either; ints are accepted where floats are;
    an empty list fits any list."""
    if isinstance(value, dict):
        sub = expected if isinstance(expected, dict) else {}
        return {key: structure(item, sub.get(key)) for key, item in value.items()}
    if isinstance(value, list):
        if not value:  # an empty list fits any list
            return expected if isinstance(expected, list) else []
        inner = expected[0] if isinstance(expected, list) and expected else None
        shapes = [structure(item, inner) for item in value]
        return [shapes[0]] if all(s == shapes[0] for s in shapes) else shapes
    name = _type(value)
    allowed = expected.split("|") if isinstance(expected, str) else []
    if name == "int" and "float" in allowed:
        name = "float"
    return expected if name in allowed else name


def test_the_json_of_a_real_analysis_has_the_pinned_structure(tmp_path, tiny_settings, tiny_model_dir):
    film = np.full((256, 224), 60, np.uint8)
    film[80:170, 60:160] = 200
    Image.fromarray(film).save(tmp_path / "film.png")
    calibration = write_calibration(tmp_path / "cal", tiny_model_dir, {"nodule": 0.001, "effusion": 0.999})
    settings = replace(tiny_settings, calibration=str(calibration))
    analysis = analyze(tmp_path / "film.png", NOTES, settings=settings, top_k=3)
    data = analysis.to_dict()
    json.dumps(data, allow_nan=False)  # plain JSON all the way down
    assert data["schema_version"] == SCHEMA_VERSION == 4
    with_evidence = [f for f in data["findings"] if f["evidence"]]
    with_regions = [f for f in data["findings"] if f["regions"]]
    assert with_evidence and with_regions, "the film and notes must exercise evidence and regions"
    got = structure(data, EXPECTED)
    # Lists of findings differ only in whether they have evidence or regions: compare one full finding.
    full = structure({**with_evidence[0], "regions": with_regions[0]["regions"]}, EXPECTED["findings"][0])
    got["findings"] = [full]
    assert list(got) == list(EXPECTED)
    assert got == EXPECTED


def test_to_dict_copies_no_pixels_and_maps_only_on_request(tmp_path, tiny_settings):
    Image.fromarray(np.full((300, 300), 90, np.uint8)).save(tmp_path / "film.png")
    analysis = analyze(tmp_path / "film.png", settings=tiny_settings, top_k=1)
    data = analysis.to_dict()
    assert "maps_png" not in data and "preview" not in data and "maps" not in data
    assert not any(isinstance(v, np.ndarray) for v in data.values())
    analysis.include_maps = True
    assert set(analysis.to_dict()["maps_png"]) == set(analysis.maps)


def test_each_finding_says_whether_it_is_a_score_or_a_probability_and_the_image_ranks(
    tmp_path, tiny_settings, tiny_model_dir
):
    """Schema 3: ``kind`` per finding (a calibration makes probabilities; the rest stay scores), the notes'
    change as an odds ratio, and the findings listed by the image, flagged first, never by the notes."""
    film = np.full((256, 224), 60, np.uint8)
    film[80:170, 60:160] = 200
    Image.fromarray(film).save(tmp_path / "film.png")
    calibration = write_calibration(tmp_path / "cal", tiny_model_dir, {"nodule": 0.001, "effusion": 0.999})
    settings = replace(tiny_settings, calibration=str(calibration))
    findings = analyze(tmp_path / "film.png", NOTES, settings=settings, top_k=0).to_dict()["findings"]
    kinds = {f["id"]: f["kind"] for f in findings}
    assert kinds["nodule"] == kinds["effusion"] == "probability"
    assert {k for fid, k in kinds.items() if fid not in ("nodule", "effusion")} == {"score"}
    order = [(f["flagged"], f["image_probability"]) for f in findings]
    assert order == sorted(order, reverse=True)
    for f in findings:
        assert abs(f["notes_odds_ratio"] - np.exp(f["note_adjustment"])) < 1e-2
