"""Notes as clinicians write them (issue 26): advice and conditions, history scope and section headings,
clause-bounded backward cues, what a chest history names, vitals and durations, evidence in words.
Every sentence here was written for these tests."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from meddx.cli.notes import run_notes, run_notes_eval
from meddx.dev.notes_eval import statuses
from meddx.notes import (
    STATUS_WORDS,
    FusionWeights,
    Status,
    by_concept,
    extract_concepts,
    fuse,
    strongest,
)


def read(text: str) -> dict[str, str]:
    return statuses(extract_concepts(text))


def cases(*pairs):
    return pytest.mark.parametrize(("text", "expected"), pairs, ids=[p[0][:40] for p in pairs])


# --- advice, plans and conditions ----------------------------------------------------------------


@cases(
    (
        "Ring the surgery if he develops a fever or new chest pain.",
        {"fever": "hypothetical", "chest_pain": "hypothetical"},
    ),
    ("Return to clinic if there is any haemoptysis.", {"haemoptysis": "hypothetical"}),
    (
        "Come back if the wheeze, cough or breathlessness get worse.",
        {"wheeze": "hypothetical", "cough": "hypothetical", "dyspnoea": "hypothetical"},
    ),
    ("Should syncope recur, an ECG is needed.", {"syncope": "hypothetical"}),
    ("Watch for cyanosis overnight.", {"cyanosis": "hypothetical"}),
    ("In case of pleuritic pain, attend the ED.", {"pleuritic_pain": "hypothetical"}),
    (
        "Advised to report night sweats or weight loss.",
        {"night_sweats": "hypothetical", "weight_loss": "hypothetical"},
    ),
    (
        "Warning signs such as confusion, blue lips or haemoptysis explained.",
        {"confusion": "hypothetical", "cyanosis": "hypothetical", "haemoptysis": "hypothetical"},
    ),
    ("He knows the signs of pneumonia to look out for.", {"pneumonia": "hypothetical"}),
    (
        "Red flags: fever, rigors and haemoptysis.",
        {"fever": "hypothetical", "chills": "hypothetical", "haemoptysis": "hypothetical"},
    ),
)
def test_advice_and_conditions_are_hypothetical(text, expected):
    assert read(text) == expected


def test_a_concept_stated_elsewhere_keeps_its_status():
    assert read("Productive cough for a week; return if it worsens or fever develops.") == {
        "productive_cough": "present",
        "fever": "hypothetical",
    }
    assert strongest(["hypothetical", "present"]) == Status.PRESENT
    assert strongest(["hypothetical", "absent"]) == Status.ABSENT
    assert strongest(["hypothetical", "family"]) == Status.HYPOTHETICAL


def test_advice_moves_no_score_but_is_shown():
    concepts = extract_concepts("Call us if you get a fever, or should a pneumothorax be suspected.")
    assert {c.name: c.status for c in concepts} == {"fever": "hypothetical", "pneumothorax": "hypothetical"}
    fused = fuse({"pneumonia": 0.3, "pneumothorax": 0.2}, concepts)
    assert fused["pneumonia"].probability == 0.3 and fused["pneumonia"].evidence == ()
    [item] = fused["pneumothorax"].evidence
    assert (
        item.status == "hypothetical" and item.delta_logit == 0.0 and fused["pneumothorax"].probability == 0.2
    )
    assert "not evidence" in STATUS_WORDS[Status.HYPOTHETICAL]
    weights = FusionWeights.default()
    assert all("hypothetical" not in per for per in weights.concepts.values())


# --- history that stops where the present starts ------------------------------------------------


@cases(
    (
        "PMH\nCOPD\nHTN\nAF\n\nPresents with cough.",
        {
            "copd": "historical",
            "hypertension": "historical",
            "atrial_fibrillation": "historical",
            "cough": "present",
        },
    ),
    (
        "Past Medical History:\n- diabetes\n- previous DVT\nHPC: breathless for 2 days",
        {"diabetes": "historical", "dvt": "historical", "dyspnoea": "present"},
    ),
    (
        "Background -\nischaemic heart disease\nheart failure\nO/E: bibasal crackles",
        {"coronary_artery_disease": "historical", "heart_failure": "historical", "crackles": "present"},
    ),
    ("PMH:\nasthma\n\nWheezy today.", {"asthma": "historical", "wheeze": "present"}),
    ("FH\nlung cancer\nSH\nsmokes 10 a day", {"cancer": "family", "smoking": "present"}),
    ("Advice\nfever\nhaemoptysis", {"fever": "hypothetical", "haemoptysis": "hypothetical"}),
    ("PMH: no asthma\nCOPD", {"asthma": "absent", "copd": "historical"}),
)
def test_a_heading_governs_the_lines_under_it(text, expected):
    assert read(text) == expected


@cases(
    ("History of asthma, presents to the ED with wheeze.", {"asthma": "historical", "wheeze": "present"}),
    (
        "Hx of heart failure, complaint of orthopnoea.",
        {"heart_failure": "historical", "orthopnoea": "present"},
    ),
    (
        "Previous MI, this morning crushing chest pain.",
        {"coronary_artery_disease": "historical", "chest_pain": "present"},
    ),
    ("History of PE, now with haemoptysis.", {"pulmonary_embolism": "historical", "haemoptysis": "present"}),
    ("Had pneumonia in 2016.", {"pneumonia": "historical"}),
    ("Was a smoker for 20 years.", {"smoking": "historical"}),
    ("Hx TB 1998.", {"tuberculosis": "historical"}),
    ("Treated for pneumonia in February.", {"pneumonia": "historical"}),
    ("Pneumothorax 2020.", {"pneumothorax": "historical"}),
)
def test_history_is_past_and_stops_at_the_present(text, expected):
    assert read(text) == expected


def test_the_present_ends_a_heading_too():
    assert read("PMH\nCOPD\nNow cough x3 wk.") == {"copd": "historical", "cough": "present"}
    assert read("PMH\nCOPD\nPresents with haemoptysis.") == {"copd": "historical", "haemoptysis": "present"}


def test_vitals_end_a_sentence():
    values = {c.name: (c.value, c.diastolic) for c in extract_concepts("BP 100/60. HR 88. RR 16.")}
    assert values == {"blood_pressure": (100, 60), "heart_rate": (88, None), "respiratory_rate": (16, None)}


def test_a_heading_needs_a_line_of_its_own_or_a_colon():
    assert read("The pmh is unknown; cough.") == {"cough": "present"}
    assert read("Plan\ncough") == {"cough": "present"}  # a "present" heading gives nothing


# --- backward cues within their clause -----------------------------------------------------------


@cases(
    (
        "Fever and cough, so a chest film was done and was unremarkable.",
        {"fever": "present", "cough": "present"},
    ),
    (
        "Pleuritic pain and hypoxia, and the d-dimer was negative.",
        {"pleuritic_pain": "present", "hypoxia": "present"},
    ),
    ("Wheeze, which improved, and the spirometry is normal.", {"wheeze": "present"}),
    ("Dyspnoea once the chest drain was removed.", {"dyspnoea": "present", "chest_drain": "absent"}),
    ("Continue antibiotics until the infection has resolved.", {"infection": "present"}),
    (
        "Leave the chest drain in until the pneumothorax has resolved.",
        {"chest_drain": "present", "pneumothorax": "present"},
    ),
    ("Febrile until the central line was removed.", {"fever": "present", "central_line": "absent"}),
    ("The effusion has resolved.", {"effusion": "absent"}),
    ("Cough, swab negative.", {"cough": "present"}),
)
def test_backward_cues_stay_in_their_clause(text, expected):
    assert read(text) == expected


# --- what a chest history names ------------------------------------------------------------------


@cases(
    (
        "HTN, IHD, AF, CCF, T2DM, CKD4, COPD, HIV.",
        {
            "hypertension": "present",
            "coronary_artery_disease": "present",
            "atrial_fibrillation": "present",
            "heart_failure": "present",
            "diabetes": "present",
            "kidney_disease": "present",
            "copd": "present",
            "hiv": "present",
        },
    ),
    ("NSTEMI with two coronary stents.", {"coronary_artery_disease": "present"}),
    ("s/p CABG.", {"coronary_artery_disease": "historical", "thoracic_surgery": "historical"}),
    ("LVF, HFrEF.", {"heart_failure": "present"}),
    ("Metastatic prostate cancer.", {"cancer": "present"}),
    ("Bed bound after a recent hip replacement.", {"immobility": "present", "recent_surgery": "present"}),
    ("Coughed up blood twice, orthopnoea and PND.", {"haemoptysis": "present", "orthopnoea": "present"}),
    (
        "Rales and rhonchi bilaterally, expiratory wheeze.",
        {"crackles": "present", "rhonchi": "present", "wheeze": "present"},
    ),
    (
        "Raised JVP, central cyanosis, finger clubbing.",
        {"jvd": "present", "cyanosis": "present", "clubbing": "present"},
    ),
    ("Acute confusion.", {"confusion": "present"}),
)
def test_chest_history_concepts_are_read(text, expected):
    assert read(text) == expected


@cases(
    ("Pitting oedema to the knees, no pulmonary oedema.", {"peripheral_edema": "present", "edema": "absent"}),
    ("Pulmonary oedema, no ankle swelling.", {"edema": "present", "peripheral_edema": "absent"}),
    ("Oedema of the legs.", {"peripheral_edema": "present"}),
    ("Syncope followed by collapse.", {"syncope": "present"}),
    ("Found collapsed at home.", {"syncope": "present"}),
    ("Left lower lobe collapse.", {"atelectasis": "present"}),
    ("The right upper lobe is collapsed.", {"atelectasis": "present"}),
)
def test_look_alikes_are_kept_apart(text, expected):
    assert read(text) == expected


def test_new_concepts_move_scores_only_with_a_published_source():
    weights = FusionWeights.default()
    for name in ("rhonchi", "cyanosis", "clubbing", "syncope", "confusion", "immobility", "dvt"):
        assert name not in weights.concepts, name
    for name in ("jvd", "coronary_artery_disease", "hypertension", "atrial_fibrillation"):
        for per in weights.concepts[name].values():
            for delta in per.values():
                assert "likelihood ratio" in delta.source and "JAMA 2005" in delta.source
                assert 0 < delta.delta < 1


# --- values: vitals, age and sex, durations ------------------------------------------------------


def test_vitals_are_typed_values():
    concepts = extract_concepts("72F, RR 30, HR 112 bpm, BP 90/60 mmHg, T 38.4, SpO2 88% on air")
    by_name = {c.name: c for c in concepts}
    assert by_name["respiratory_rate"].value == 30 and by_name["respiratory_rate"].unit == "/min"
    assert by_name["heart_rate"].value == 112 and by_name["blood_pressure"].diastolic == 60
    assert by_name["tachypnoea"].status == "present" and by_name["fever"].value == 38.4
    words = [c.describe() for c in concepts]
    assert words[:2] == ["Age 72 years", "Female"]
    assert "Respiratory rate 30/min" in words and "Heart rate 112/min" in words
    assert "Blood pressure 90/60 mmHg" in words and "Oxygen saturation 88%" in words
    assert all(c.is_value for c in concepts if c.category in ("demographic", "vital"))
    assert json.loads(json.dumps(concepts[0].to_dict()))["words"] == "Age 72 years"


@cases(
    ("RR 18", None),
    ("RR 21", None),
    ("RR 22", "present"),
    ("respiratory rate of 35/min", "present"),
)
def test_tachypnoea_from_the_rate(text, expected):
    assert {c.name: c.status for c in extract_concepts(text)}.get("tachypnoea") == expected


@cases(
    ("Cough x3d.", {"cough": 3.0}),
    ("SOB for 2 weeks and wheeze.", {"dyspnoea": 14.0, "wheeze": None}),
    ("Cough and wheeze for 2 weeks.", {"cough": 14.0, "wheeze": 14.0}),
    ("3 day history of fever and cough.", {"fever": 3.0, "cough": 3.0}),
    ("Haemoptysis 2/52.", {"haemoptysis": 14.0}),
    ("Chest pain for a week, no fever.", {"chest_pain": 7.0}),
    ("Cough started 3 days ago.", {"cough": None}),
    ("Haemoptysis x2 today.", {"haemoptysis": None}),
    ("RR 30 HR 120, cough.", {"cough": None}),
)
def test_durations_attach_to_the_symptoms_they_speak_of(text, expected):
    got = {c.name: c.duration_days for c in extract_concepts(text) if c.category == "symptom"}
    for name, days in expected.items():
        assert got[name] == days, (name, got)


def test_a_duration_reads_as_words():
    [cough] = extract_concepts("Cough for 3 wk")
    assert cough.describe() == "Cough for 3 weeks"


# --- evidence in words ----------------------------------------------------------------------------


def test_one_line_per_concept_in_words_without_log_odds():
    concepts = extract_concepts("Smoker. Hx COPD. Fever and productive cough. Raised JVP.")
    fused = fuse({"pneumonia": 0.3, "emphysema": 0.2, "edema": 0.2, "nodule": 0.1, "mass": 0.1}, concepts)
    lines = by_concept(fused)
    assert len({e.concept for e in lines}) == len(lines)
    copd = next(e for e in lines if e.concept == "copd")
    assert copd.words.startswith("COPD (in the history): raises the odds of")
    smoking = next(e for e in lines if e.concept == "smoking")
    assert smoking.words.startswith("Smoking (stated: “Smoker”): raises the odds of")
    for line in lines:
        assert "log-odds" not in line.words and line.words.count(line.display) == 1
        assert line.effects and all(isinstance(d, float) for _, d in line.effects)
    items = [e for f in fused.values() for e in f.evidence]
    assert all(e.source and e.display not in e.reason and e.status not in e.reason for e in items)
    copd_source = FusionWeights.default().concepts["copd"]["historical"]["emphysema"].source
    assert "in the history" in copd_source and "still there" not in copd_source


def test_the_cli_prints_words_and_the_worst_case():
    out = io.StringIO()
    with redirect_stdout(out):
        assert run_notes(["58M, RR 28, cough x3d", "--json"]) == 0
    words = [c["words"] for c in json.loads(out.getvalue())]
    assert words == [
        "Age 58 years",
        "Male",
        "Respiratory rate 28/min",
        "Tachypnoea 28/min",
        "Cough for 3 days",
    ]
    out = io.StringIO()
    with redirect_stdout(out):
        assert run_notes_eval(["--worst-case"]) == 0
    assert '20,000 characters of "no effusion, ": ' in out.getvalue()


@cases(
    ("Return to the ED for worsening chest pain.", {"chest_pain": "hypothetical"}),
    ("On DVT prophylaxis.", {"dvt": "hypothetical"}),
    ("History of asthma, developed wheeze yesterday.", {"asthma": "historical", "wheeze": "present"}),
    ("Faint nodular opacity.", {"nodular_opacity": "present"}),
    ("Felt faint and fainted.", {"syncope": "present"}),
)
def test_more_clinic_wording(text, expected):
    assert read(text) == expected


def test_the_version_benchmark_refuses_a_folder_without_meddx(tmp_path, capsys):
    assert run_notes_eval(["--against", str(tmp_path)]) == 2
    assert "no meddx checkout" in capsys.readouterr().err


@cases(
    (
        "?PE, SOB, haemoptysis.",
        {"pulmonary_embolism": "uncertain", "dyspnoea": "present", "haemoptysis": "present"},
    ),
    ("?PE or pneumonia.", {"pulmonary_embolism": "uncertain", "pneumonia": "uncertain"}),
    ("Smoked 30 a day until 2012.", {"smoking": "historical"}),
)
def test_a_query_stays_in_its_item_and_until_a_year_is_the_past(text, expected):
    assert read(text) == expected
