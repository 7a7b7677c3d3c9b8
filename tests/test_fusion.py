"""Tests for meddx.fusion: log-odds arithmetic checked by hand, the bounds, and the evidence listing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from meddx.clinical_notes import Concept, extract_concepts
from meddx.errors import InputError
from meddx.fusion import FusedFinding, FusionWeights, fuse


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def weights(**limits) -> FusionWeights:
    """Small weights written here, so each expected number can be worked out by hand."""
    return FusionWeights.from_dict(
        {
            "limits": {
                "max_total": limits.get("max_total", 1.5),
                "strong_image": {"high": 0.9, "low": 0.1, "max_fraction": limits.get("max_fraction", 0.5)},
            },
            "finding_mentions": {
                "present": {"delta": 1.0, "source": "test"},
                "absent": {"delta": -1.0, "source": "test"},
                "uncertain": {"delta": 0.3, "source": "test"},
                "historical": {"delta": 0.3, "source": "test"},
                "family": {"delta": 0.0, "source": "test"},
            },
            "concepts": {
                "fever": {"present": {"pneumonia": {"delta": 0.5, "source": "test fever"}}},
                "productive_cough": {"present": {"pneumonia": {"delta": 0.3, "source": "test"}}},
                "trauma": {"present": {"fracture": {"delta": 0.9, "source": "test"}}},
                "chest_pain": {"present": {"fracture": {"delta": 0.9, "source": "test"}}},
                "smoking": {"present": {"mass": {"delta": 0.4, "source": "test"}}},
            },
            "combinations": [
                {
                    "id": "fever_with_productive_cough",
                    "name": "Fever with productive cough",
                    "all": [
                        {"concept": "fever", "status": "present"},
                        {"concept": "productive_cough", "status": "present"},
                    ],
                    "deltas": {"pneumonia": {"delta": 0.4, "source": "test combo"}},
                },
                {
                    "id": "heavy_smoking",
                    "name": "Heavy smoking",
                    "all": [{"concept": "smoking", "status": "present", "min_value": 30}],
                    "deltas": {"mass": {"delta": 0.2, "source": "test"}},
                },
            ],
        }
    )


def test_single_concept_by_hand():
    fused = fuse({"pneumonia": 0.4}, extract_concepts("Fever."), weights=weights())["pneumonia"]
    # logit(0.4) = ln(0.4 / 0.6) = -0.405465; + 0.5 = 0.094535; sigmoid = 0.523616
    assert fused.probability == pytest.approx(0.523616, abs=1e-6)
    assert fused.adjustment == pytest.approx(0.5)
    assert fused.limited_by is None
    [item] = fused.evidence
    assert (item.concept, item.status, item.finding, item.delta_logit) == (
        "fever",
        "present",
        "pneumonia",
        0.5,
    )
    assert item.span == (0, 5) and item.text == "Fever"
    assert "test fever" in item.reason and "+0.50" in item.reason


def test_combination_adds_to_the_single_concepts():
    text = "Fever and productive cough."
    fused = fuse({"pneumonia": 0.2}, extract_concepts(text), weights=weights())["pneumonia"]
    assert [e.concept for e in fused.evidence] == ["fever", "productive_cough", "fever_with_productive_cough"]
    assert fused.adjustment == pytest.approx(0.5 + 0.3 + 0.4)
    assert fused.probability == pytest.approx(sigmoid(logit(0.2) + 1.2))
    combo = fused.evidence[-1]
    assert combo.span == (0, 26) and combo.text == "Fever + productive cough" and "test combo" in combo.reason


def test_combination_with_a_minimum_value():
    light = fuse({"mass": 0.3}, extract_concepts("Smoker, 10 pack-years."), weights=weights())["mass"]
    heavy = fuse({"mass": 0.3}, extract_concepts("Smoker, 40 pack-years."), weights=weights())["mass"]
    assert light.adjustment == pytest.approx(0.4)
    assert heavy.adjustment == pytest.approx(0.6)


def test_finding_mentions_in_the_notes():
    concepts = extract_concepts("Small effusion. No pneumothorax. Possible nodule. Old rib fracture.")
    fused = fuse(
        {"effusion": 0.5, "pneumothorax": 0.5, "nodule": 0.5, "fracture": 0.5}, concepts, weights=weights()
    )
    assert fused["effusion"].probability == pytest.approx(sigmoid(1.0))
    assert fused["pneumothorax"].probability == pytest.approx(sigmoid(-1.0))
    assert fused["nodule"].probability == pytest.approx(sigmoid(0.3))
    assert fused["fracture"].probability == pytest.approx(sigmoid(0.3))


def test_one_status_per_concept_however_often_mentioned():
    concepts = extract_concepts("No effusion. Effusion on the left. Effusion again.")
    fused = fuse({"effusion": 0.5}, concepts, weights=weights())["effusion"]
    assert len(fused.evidence) == 1 and fused.evidence[0].status == "present"
    assert fused.evidence[0].span == (13, 21)


def test_total_is_clipped():
    fused = fuse(
        {"fracture": 0.5}, extract_concepts("Trauma with chest pain."), weights=weights(max_total=1.5)
    )
    assert sum(e.delta_logit for e in fused["fracture"].evidence) == pytest.approx(1.8)
    assert fused["fracture"].adjustment == pytest.approx(1.5)
    assert fused["fracture"].limited_by == "max_total"
    assert fused["fracture"].probability == pytest.approx(sigmoid(1.5))


def test_strong_image_signal_is_not_overruled():
    w = weights(max_total=3.0, max_fraction=0.5)
    absent = extract_concepts("No pneumothorax.")
    # p = 0.9: logit 2.1972; the -1.0 from the notes is allowed down to -0.5 * 2.1972 = -1.0986: no bound
    fused = fuse({"pneumothorax": 0.9}, absent, weights=w)["pneumothorax"]
    assert fused.limited_by is None and fused.probability == pytest.approx(sigmoid(logit(0.9) - 1.0))
    # p = 0.95 with -1.0: logit 2.9444, floor -1.4722: not reached
    assert fuse({"pneumothorax": 0.95}, absent, weights=w)["pneumothorax"].limited_by is None
    # a bigger negative sum against p = 0.9 stops at half the image's log-odds: odds 9 -> 3, p = 0.75
    two = extract_concepts("No pneumothorax. Trauma with chest pain.")
    w2 = FusionWeights.from_dict(
        {
            "limits": {"max_total": 3.0, "strong_image": {"high": 0.9, "low": 0.1, "max_fraction": 0.5}},
            "finding_mentions": {"absent": {"delta": -2.0, "source": "test"}},
        }
    )
    fused = fuse({"pneumothorax": 0.9}, two, weights=w2)["pneumothorax"]
    assert fused.limited_by == "strong_image"
    assert fused.adjustment == pytest.approx(-0.5 * logit(0.9))
    assert fused.probability == pytest.approx(0.75)
    # and symmetric at the low end: 0.1 can rise to 0.25 at most
    w3 = FusionWeights.from_dict(
        {
            "limits": {"max_total": 3.0, "strong_image": {"high": 0.9, "low": 0.1, "max_fraction": 0.5}},
            "finding_mentions": {"present": {"delta": 2.5, "source": "test"}},
        }
    )
    fused = fuse({"effusion": 0.1}, extract_concepts("Effusion."), weights=w3)["effusion"]
    assert fused.limited_by == "strong_image" and fused.probability == pytest.approx(0.25)


@pytest.mark.parametrize("p", [0.9, 0.93, 0.99, 0.999999, 1.0])
def test_strong_image_never_crosses_one_half(p):
    w = FusionWeights.from_dict(
        {
            "limits": {"max_total": 50.0, "strong_image": {"high": 0.9, "low": 0.1, "max_fraction": 0.99}},
            "finding_mentions": {
                "absent": {"delta": -50.0, "source": "test"},
                "present": {"delta": 50.0, "source": "t"},
            },
        }
    )
    assert fuse({"edema": p}, extract_concepts("No edema."), weights=w)["edema"].probability > 0.5
    assert fuse({"edema": 1 - p}, extract_concepts("Edema."), weights=w)["edema"].probability < 0.5


def test_same_direction_as_the_image_is_only_clipped():
    fused = fuse({"effusion": 0.95}, extract_concepts("Effusion."), weights=weights())["effusion"]
    assert fused.limited_by is None and fused.probability == pytest.approx(sigmoid(logit(0.95) + 1.0))


def test_no_evidence_and_custom_labels_pass_through_exactly():
    probabilities = {"pneumonia": 0.123456789, "pleural catheter": 0.77, "nodule": 0.0, "mass": 1.0}
    fused = fuse(probabilities, extract_concepts("Cough for a week."), weights=weights())
    assert list(fused) == list(probabilities)
    for finding, p in probabilities.items():
        assert fused[finding].probability == p and fused[finding].image_probability == p
        assert fused[finding].evidence == () and fused[finding].adjustment == 0.0
    assert fuse({"x": 0.3}, [], weights=weights())["x"] == FusedFinding("x", 0.3, 0.3, ())


def test_family_history_is_listed_with_no_effect():
    fused = fuse({"tuberculosis": 0.31}, extract_concepts("Mother had TB."), weights=weights())[
        "tuberculosis"
    ]
    [item] = fused.evidence
    assert item.status == "family" and item.delta_logit == 0.0 and "no effect" in item.reason
    assert fused.probability == 0.31


def test_default_weights_load_and_make_sense():
    default = FusionWeights.default()
    assert default is FusionWeights.default()
    assert default.max_total == 1.5 and default.strong_high == 0.9 and default.strong_low == 0.1
    assert (
        default.finding_mentions["present"].delta == 1.0 and default.finding_mentions["absent"].delta == -1.0
    )
    concepts = extract_concepts(
        "Fever 38.9 with productive cough. Ex-smoker. Close contact with TB. Fall with chest pain. "
        "Known heart failure."
    )
    fused = fuse({f: 0.5 for f in ("pneumonia", "tuberculosis", "fracture", "edema", "emphysema")}, concepts)
    for finding in fused.values():
        assert finding.probability > 0.5, finding
        assert all(e.reason and e.delta_logit > 0 for e in finding.evidence)
    assert "fever_with_productive_cough" in {e.concept for e in fused["pneumonia"].evidence}


def test_to_dict_is_json():
    fused = fuse({"pneumonia": 0.4}, extract_concepts("Fever and productive cough."))["pneumonia"]
    data = json.loads(json.dumps(fused.to_dict()))
    assert data["finding"] == "pneumonia" and data["evidence"][0]["span"] == [0, 5]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_probabilities_raise_input_error(bad):
    with pytest.raises(InputError):
        fuse({"pneumonia": bad}, [])


def test_hand_built_concepts_work():
    concept = Concept("cough", "Cough", "symptom", "absent", 0, 5, "cough", ("pneumonia",))
    fused = fuse({"pneumonia": 0.5}, [concept])["pneumonia"]
    assert fused.adjustment == pytest.approx(-0.2)


def test_weights_from_a_file_and_their_checks(tmp_path):
    packaged = Path(__file__).parents[1] / "meddx" / "data" / "fusion_weights.yaml"
    assert FusionWeights.from_yaml(packaged) == FusionWeights.default()
    bad = tmp_path / "weights.yaml"
    bad.write_text(
        "limits: {max_total: 1.5, strong_image: {high: 0.9, low: 0.1, max_fraction: 1.0}}\n"
        "finding_mentions: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="max_fraction"):
        FusionWeights.from_yaml(bad)
