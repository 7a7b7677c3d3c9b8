"""Tests for meddx.notes.fusion: log-odds arithmetic checked by hand, the bounds, and the evidence listing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from meddx.errors import InputError
from meddx.model.vocabulary import load_vocabulary
from meddx.notes import Concept, FusedFinding, FusionWeights, extract_concepts, finding_statuses, fuse


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
    assert item.source == "test fever" and item.reason == "raises the odds of pneumonia about 1.6×"
    assert "Fever" not in item.reason and "present" not in item.reason and "log-odds" not in item.reason


def test_combination_adds_to_the_single_concepts():
    text = "Fever and productive cough."
    fused = fuse({"pneumonia": 0.2}, extract_concepts(text), weights=weights())["pneumonia"]
    assert [e.concept for e in fused.evidence] == ["fever", "productive_cough", "fever_with_productive_cough"]
    assert fused.adjustment == pytest.approx(0.5 + 0.3 + 0.4)
    assert fused.probability == pytest.approx(sigmoid(logit(0.2) + 1.2))
    combo = fused.evidence[-1]
    assert combo.span == (0, 26) and combo.text == "Fever + productive cough" and combo.source == "test combo"


def test_combination_with_a_minimum_value():
    light = fuse({"mass": 0.3}, extract_concepts("Smoker, 10 pack-years."), weights=weights())["mass"]
    heavy = fuse({"mass": 0.3}, extract_concepts("Smoker, 40 pack-years."), weights=weights())["mass"]
    assert light.adjustment == pytest.approx(0.4)
    assert heavy.adjustment == pytest.approx(0.6)


def test_finding_mentions_in_the_notes():
    concepts = extract_concepts("Small effusion. No pneumothorax. Possible nodule. History of rib fracture.")
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
    assert item.status == "family" and item.delta_logit == 0.0 and "moves nothing" in item.reason
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


# --- safety: the notes move a finding only the way they read it -------------------------------------

SAFETY_NOTES = [
    "No pneumonia. Fever, productive cough, crackles and bronchial breathing.",
    "No pleural effusion. Blunted costophrenic angle, chest drain, dullness to percussion.",
    "No pneumothorax. Trauma, subcutaneous emphysema, pleuritic chest pain.",
    "No pulmonary edema. Vascular congestion, orthopnoea, peripheral oedema, heart failure.",
    "Afebrile. Pneumonia. No cough.",
    "No history of TB. Three weeks of cough, fever, night sweats and weight loss; HIV positive.",
]


@pytest.mark.parametrize("text", SAFETY_NOTES)
@pytest.mark.parametrize("p", [0.02, 0.3, 0.5, 0.7, 0.95])
def test_a_stated_finding_moves_only_the_way_the_notes_state_it(text, p):
    concepts = extract_concepts(text)
    stated = finding_statuses(concepts)
    fused = fuse(dict.fromkeys(stated, p), concepts)
    for finding, status in stated.items():
        if status == "absent":
            assert fused[finding].probability <= p, (finding, fused[finding])
        if status in ("present", "no_history"):
            assert fused[finding].probability >= p, (finding, fused[finding])


def test_no_history_of_a_finding_never_lowers_it():
    for finding in load_vocabulary().findings:
        for synonym in finding.synonyms[:3]:
            concepts = extract_concepts(f"No history of {synonym}.")
            fused = fuse({finding.id: 0.5}, concepts)[finding.id]
            assert fused.probability >= 0.5, (synonym, concepts, fused)


def test_no_history_of_tb_is_listed_and_moves_nothing():
    fused = fuse({"tuberculosis": 0.4}, extract_concepts("No history of TB."))["tuberculosis"]
    assert fused.probability == 0.4
    assert [(e.status, e.delta_logit) for e in fused.evidence] == [("no_history", 0.0)]


def test_stated_absent_blocks_a_rise_and_says_so():
    fused = fuse({"pneumonia": 0.5}, extract_concepts("No pneumonia. Fever and productive cough."))
    assert fused["pneumonia"].probability == 0.5
    assert fused["pneumonia"].limited_by == "stated_in_notes"
    assert sum(e.delta_logit for e in fused["pneumonia"].evidence) > 0  # listed, and held back


def _labelled_texts() -> list[str]:
    data = Path(__file__).parent / "data"
    return [
        json.loads(line)["text"]
        for name in ("note_sentences.jsonl", "note_sentences_batch2.jsonl")
        for line in (data / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def test_every_evidence_item_is_what_the_reader_read():
    ids = [f.id for f in load_vocabulary().findings]
    combos = {c.id: c for c in FusionWeights.default().combinations}
    checked = 0
    for text in _labelled_texts():
        concepts = extract_concepts(text)
        read = {(c.name, c.status, (c.start, c.end), c.text) for c in concepts}
        for fused in fuse(dict.fromkeys(ids, 0.5), concepts).values():
            for e in fused.evidence:
                checked += 1
                if e.concept in combos:  # a rule: each part is a mention read with the status it needs
                    needed = {(k.concept, k.status) for k in combos[e.concept].conditions}
                    for part in e.text.split(" + "):
                        assert any((c.name, c.status) in needed and c.text == part for c in concepts), e
                    continue
                assert (e.concept, e.status, e.span, e.text) in read, (text, e)
                assert text[e.span[0] : e.span[1]] == e.text
                assert e.display not in e.reason and e.status not in e.reason and e.source
    assert checked > 300
