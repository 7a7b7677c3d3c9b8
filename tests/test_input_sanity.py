"""Input sanity (issue 14): colour content, the encoder's own "chest X-ray or not" check, "did you mean" for
finding names, and the DICOM header's age and sex against the notes. All of them warn; only an unknown id
in the API's ``findings`` is refused.

The colour rule is measured on real generated images (seeded colour noise, grayscale films saved as RGB).
The prompt check's *accuracy* cannot be measured with tiny random models (its probability is about 0.5 on
anything); these tests check its wiring: that it is computed from the film's real embedding, and that the
warning follows the data file's threshold.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from meddx.dev.tiny import synthetic_film
from meddx.errors import InputError
from meddx.io import load_study
from meddx.io.colour import coloured_fraction
from meddx.model import sanity
from meddx.model.encoder import load_encoder
from meddx.model.vocabulary import load_vocabulary
from meddx.pipeline import analyze
from tests.helpers import PLANTED_IDENTIFIERS, chest_dataset

COLOUR = "The image is in colour"
PROMPT_CHECK = "image-text check rates this image as unlike a chest radiograph"


def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gray_film(seed: int = 0) -> np.ndarray:
    return synthetic_film(np.random.default_rng(seed), size=256, blob=True).pixels


def colour_noise(seed: int = 0, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# --- colour ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_colour_noise_is_warned_about(fmt):
    study = load_study(encoded(colour_noise(), fmt))
    [warning] = [w for w in study.warnings if COLOUR in w]
    assert "check that this is a chest X-ray" in warning


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 40}), ("BMP", {})])
def test_a_grayscale_film_saved_as_rgb_is_not_colour(fmt, options):
    rgb = np.repeat(gray_film()[..., None], 3, axis=-1)
    study = load_study(encoded(rgb, fmt, **options))
    assert study.info.photometric_interpretation == "RGB"
    assert not [w for w in study.warnings if COLOUR in w]


def test_the_colour_fractions_of_the_two_kinds_lie_far_apart():
    film = np.repeat(gray_film(1)[..., None], 3, axis=-1)
    jpeg_film = np.asarray(Image.open(io.BytesIO(encoded(film, "JPEG", quality=30))).convert("RGB"))
    jpeg_noise = np.asarray(Image.open(io.BytesIO(encoded(colour_noise(1), "JPEG"))).convert("RGB"))
    assert coloured_fraction(film) == 0.0
    assert coloured_fraction(jpeg_film) < 0.001
    assert coloured_fraction(jpeg_noise) > 0.5


def test_a_small_coloured_marker_on_a_film_is_not_colour_but_a_tinted_photo_is():
    rgb = np.repeat(gray_film()[..., None], 3, axis=-1)
    rgb[10:30, 10:60] = (255, 0, 0)  # a red "R" marker: 1.5 % of the film
    assert not [w for w in load_study(encoded(rgb, "PNG")).warnings if COLOUR in w]
    sepia = (rgb.astype(np.float32) * np.array([1.0, 0.8, 0.55])).astype(np.uint8)  # a film photographed warm
    assert [w for w in load_study(encoded(sepia, "PNG")).warnings if COLOUR in w]


def test_a_colour_dicom_is_warned_about_and_a_rgb_gray_one_is_not():
    noise16 = colour_noise(2, 96).astype(np.uint16) * 16
    coloured = chest_dataset(noise16, photometric="RGB", bits_stored=12)
    gray = chest_dataset(np.repeat(noise16[..., :1], 3, axis=-1), photometric="RGB", bits_stored=12)
    for ds, expected in ((coloured, True), (gray, False)):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        study = load_study(buffer.getvalue())
        assert bool([w for w in study.warnings if COLOUR in w]) is expected


def test_colour_noise_through_the_pipeline_is_scored_with_the_warning(tiny_settings):
    analysis = analyze(encoded(colour_noise(), "JPEG"), settings=tiny_settings, top_k=0)
    assert analysis.findings  # a warning, not a refusal
    assert any(COLOUR in w for w in analysis.to_dict()["warnings"])


# --- the encoder's own check ------------------------------------------------------------------------------


def test_the_check_is_data():
    check = sanity.chest_xray_check()
    assert check.threshold == 0.25
    assert any("chest x-ray" in p for p in check.prompts.positive)
    assert any("photograph" in p for p in check.prompts.negative) and "random noise" in check.prompts.negative


def test_the_check_uses_the_films_own_embedding(tiny_settings):
    """The probability the pipeline uses equals the two-way zero-shot formula on a full forward pass."""
    from meddx.model.scored import score_image
    from meddx.model.zero_shot import text_directions

    encoder = load_encoder(tiny_settings.model, threads=1)
    film = Image.fromarray(gray_film()).convert("RGB")
    findings = load_vocabulary().select(["effusion"])
    scored = score_image(encoder, film, text_directions(encoder, findings))
    probability = sanity.chest_xray_probability(encoder, scored.embedding())

    check = sanity.chest_xray_check()
    [direction] = text_directions(encoder, [check.prompts]).difference
    with torch.inference_mode():
        pixels, _ = encoder.preprocess(film)
        full = encoder.model.encode_image(pixels[None], normalize=True)[0]
    expected = torch.sigmoid(encoder.logit_scale * full @ direction).item()
    assert probability == pytest.approx(expected, abs=1e-4)
    noise = Image.fromarray(colour_noise())
    scored_noise = score_image(encoder, noise, text_directions(encoder, findings))
    assert sanity.chest_xray_probability(encoder, scored_noise.embedding()) != pytest.approx(
        probability, abs=1e-6
    )


def test_the_warning_follows_the_threshold(tiny_settings):
    encoder = load_encoder(tiny_settings.model, threads=1)
    from meddx.model.scored import score_image
    from meddx.model.zero_shot import text_directions

    findings = load_vocabulary().select(["effusion"])
    scored = score_image(
        encoder, Image.fromarray(gray_film()).convert("RGB"), text_directions(encoder, findings)
    )
    probability = sanity.chest_xray_probability(encoder, scored.embedding())
    prompts = sanity.chest_xray_check().prompts
    above = sanity.ChestXrayCheck(prompts, threshold=probability + 0.01)
    below = sanity.ChestXrayCheck(prompts, threshold=probability - 0.01)
    [warning] = sanity.chest_xray_warnings(probability, above)
    assert f"({probability:.2f}, below" in warning and "accuracy has not been measured" in warning
    assert sanity.chest_xray_warnings(probability, below) == []


def test_an_undecided_tiny_model_does_not_warn_by_default(tiny_settings):
    """Random weights sit at about 0.5, far from the data's 0.25: a coin toss raises no doubt."""
    png = encoded(gray_film(), "PNG")
    analysis = analyze(png, settings=tiny_settings, top_k=0)
    assert not [w for w in analysis.warnings if PROMPT_CHECK in w]


def test_the_pipeline_warns_when_the_data_threshold_says_so(tiny_settings, monkeypatch):
    strict = sanity.ChestXrayCheck(sanity.chest_xray_check().prompts, threshold=0.99)
    monkeypatch.setattr(sanity, "chest_xray_check", lambda: strict)  # the data file's threshold, changed
    analysis = analyze(encoded(gray_film(), "PNG"), settings=tiny_settings, top_k=0)
    assert [w for w in analysis.warnings if PROMPT_CHECK in w]


# --- did you mean ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("effusoin", "effusion"),
        ("Pleural efusion", "effusion"),
        ("left pleural effusoin", "effusion"),
        ("pnuemothorax", "pneumothorax"),
        ("cardiomegally", "cardiomegaly"),
        ("hiatus hernia", None),
        ("foo", None),
    ],
)
def test_suggestions(label, expected):
    near = load_vocabulary().suggest(label)
    assert (near.id if near else None) == expected


def test_a_misspelt_custom_finding_is_scored_with_a_did_you_mean_warning(tiny_settings):
    png = encoded(gray_film(), "PNG")
    analysis = analyze(png, settings=tiny_settings, labels=["effusoin", "hiatus hernia"], top_k=0)
    assert {f.id for f in analysis.findings} == {"effusoin", "hiatus_hernia"}
    [warning] = [w for w in analysis.warnings if "did you mean" in w]
    assert '"effusoin" is not a finding meddx knows' in warning
    assert 'did you mean "Pleural effusion" (id effusion)?' in warning


def test_unknown_ids_are_refused_with_a_suggestion():
    vocabulary = load_vocabulary()
    vocabulary.check_known(["effusion", "Pleural effusion", "ptx", " "])  # ids, names and synonyms pass
    with pytest.raises(InputError, match='Did you mean "effusion"') as raised:
        vocabulary.check_known(["effusoin"])
    assert "custom_findings" in str(raised.value)
    with pytest.raises(InputError) as raised:
        vocabulary.check_known(["foo"])
    message = str(raised.value)
    assert '"foo", which is not a finding id' in message and "Did you mean" not in message
    assert all(f.id in message for f in vocabulary.findings)


def test_the_api_refuses_an_unknown_id_and_warns_about_a_misspelt_custom_finding(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    film = tmp_path / "film.png"
    film.write_bytes(encoded(gray_film(), "PNG"))
    with pytest.raises(AppError, match="which is not a finding id"):
        client.predict(handle_file(film), findings=["foo"], api_name="/analyze")
    with pytest.raises(AppError, match='Did you mean "effusion"'):
        client.predict(handle_file(film), findings=["effusoin"], api_name="/analyze")
    data, _ = client.predict(
        handle_file(film), findings=["effusion"], custom_findings="effusoin", maps=0, api_name="/analyze"
    )
    assert any('did you mean "Pleural effusion"' in w for w in data["warnings"]), data["warnings"]


# --- DICOM age and sex against the notes ----------------------------------------------------------------


def dicom_film(age: str | None = "045Y", sex: str | None = "F") -> bytes:
    pixels = gray_film().astype(np.uint16) * 16
    tags = {k: v for k, v in (("PatientAge", age), ("PatientSex", sex)) if v is not None}
    ds = chest_dataset(pixels, bits_stored=12, **tags)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


MISMATCH = (
    "The patient's age (by more than a year) and sex in the notes differ from the DICOM header: check that "
    "the notes and the film belong to the same patient."
)


def test_notes_that_disagree_with_the_header_are_warned_about(tiny_settings, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    notes = "67-year-old male smoker, 3 weeks of cough and fever"
    analysis = analyze(dicom_film(), notes, settings=tiny_settings, top_k=0)
    assert MISMATCH in analysis.warnings
    data = json.dumps(analysis.to_dict())
    assert all(value not in data for value in PLANTED_IDENTIFIERS.values())
    assert "045Y" not in data and "67" not in " ".join(analysis.warnings)  # the warning repeats neither
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "045Y" not in logged and "67-year-old" not in logged


@pytest.mark.parametrize(
    ("age", "sex", "notes"),
    [
        ("067Y", "M", "67-year-old male"),
        ("068Y", "M", "67 yo man with cough"),  # a birthday between the film and the notes
        ("045Y", "F", "45F, cough"),
        ("016Y", "F", "woman aged 16"),
        ("045Y", "F", "45 yo woman, smoker since age 16"),  # a later age is not the patient's
        (None, None, "67-year-old male"),  # nothing in the header
        ("45 years", "female", "67-year-old male"),  # malformed header values are dropped, not compared
        ("045Y", "O", "45 yo male"),  # only M and F are compared
        ("093Y", "M", "95 year old man"),  # over 89: both "90 or older"
        ("045Y", "F", None),  # no notes
    ],
)
def test_agreeing_or_incomparable_values_give_no_warning(tiny_settings, age, sex, notes):
    analysis = analyze(dicom_film(age, sex), notes, settings=tiny_settings, top_k=0)
    assert not [w for w in analysis.warnings if "DICOM header" in w]


def test_sex_alone_or_age_alone_can_disagree(tiny_settings):
    only_sex = analyze(dicom_film("045Y", "M"), "45 yo woman", settings=tiny_settings, top_k=0)
    assert (
        "The patient's sex in the notes differs from the DICOM header: check that the notes and the film "
        "belong to the same patient."
    ) in only_sex.warnings
    only_age = analyze(dicom_film("030Y", None), "67-year-old", settings=tiny_settings, top_k=0)
    assert any(
        w.startswith("The patient's age (by more than a year) in the notes differs")
        for w in only_age.warnings
    )


def test_demographics_survive_the_bounded_read_and_never_print(tiny_settings):
    from meddx.io.bounded import load_study_bounded

    study = load_study_bounded(dicom_film(), filename="film.dcm", limits=tiny_settings.limits)
    assert (study.demographics.age, study.demographics.sex) == ("045Y", "F")
    assert study.demographics.age_years == 45
    assert "045Y" not in repr(study) and "045Y" not in repr(study.demographics)
