"""Zero-shot scoring maths against hand computation, and a planted signal carried end to end."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from meddx.model.encoder import load_encoder
from meddx.model.tower import TowerTail, stem
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import text_directions, zero_shot_probabilities


@pytest.fixture
def encoder(tiny_model_dir):
    return load_encoder(f"local-dir:{tiny_model_dir}")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_directions_are_prompt_ensembles(encoder):
    finding = load_vocabulary().finding("effusion")
    directions = text_directions(encoder, [finding])
    positives, negatives = finding.prompts()
    # By hand: per phrase, mean of unit template embeddings, renormalised; then mean over phrases.
    per_phrase = [
        _unit(_unit(encoder.embed_texts([t.format(p) for t in finding.templates_positive])).mean(0))
        for p in finding.positive
    ]
    expected = _unit(torch.stack(per_phrase).mean(0))
    torch.testing.assert_close(directions.positive[0], expected, atol=1e-5, rtol=1e-5)
    assert len(positives) == len(finding.positive) * len(finding.templates_positive)
    assert len(negatives) == len(finding.negative) * len(finding.templates_negative)


def test_every_finding_gets_its_own_ensemble_when_computed_together(encoder):
    """Phrases are embedded shortest first in small batches; each must come back to its own finding."""
    encoder.direction_cache.clear()
    findings = list(load_vocabulary().findings)
    directions = text_directions(encoder, findings)
    for row, finding in enumerate(findings):
        for sign, phrases, templates in (
            ("positive", finding.positive, finding.templates_positive),
            ("negative", finding.negative, finding.templates_negative),
        ):
            per_phrase = [
                _unit(_unit(encoder.embed_texts([t.format(p) for t in templates])).mean(0)) for p in phrases
            ]
            expected = _unit(torch.stack(per_phrase).mean(0))
            torch.testing.assert_close(getattr(directions, sign)[row], expected, atol=1e-5, rtol=1e-5)
    encoder.direction_cache.clear()


def test_probability_is_two_way_softmax(encoder):
    findings = [load_vocabulary().finding(i) for i in ("effusion", "nodule", "cardiomegaly")]
    directions = text_directions(encoder, findings)
    image = _unit(torch.randn(2, directions.positive.shape[1]))
    probs = zero_shot_probabilities(directions.logits(image))
    s = encoder.logit_scale
    for n in range(2):
        for f in range(3):
            pair = torch.tensor(
                [s * image[n] @ directions.positive[f], s * image[n] @ directions.negative[f]]
            )
            assert probs[n, f].item() == pytest.approx(torch.softmax(pair, 0)[0].item(), abs=1e-6)
    # Independent per finding: not one softmax across findings.
    assert not torch.allclose(probs.sum(1), torch.ones(2))


def test_directions_are_cached_and_order_independent(encoder):
    vocab = load_vocabulary()
    a = text_directions(encoder, [vocab.finding("nodule"), vocab.finding("mass")])
    b = text_directions(encoder, [vocab.finding("mass"), vocab.finding("nodule")])
    torch.testing.assert_close(a.positive[0], b.positive[1])


def test_split_tower_equals_full_forward(encoder):
    directions = text_directions(encoder, list(load_vocabulary().findings))
    pixels = torch.randn(2, 3, encoder.image_size, encoder.image_size)
    tail = TowerTail(encoder, directions.difference, directions.logit_scale)
    with torch.no_grad():
        torch.testing.assert_close(
            tail(stem(encoder, pixels)), directions.logits(encoder.embed_images(pixels))
        )


def test_custom_labels_get_generated_prompts(encoder):
    vocab = load_vocabulary()
    chosen = vocab.select(["Pleural effusion", "effusion", "pneumoperitoneum", "Cardiomegaly"])
    assert [f.id for f in chosen] == ["effusion", "pneumoperitoneum", "cardiomegaly"]
    custom = chosen[1]
    assert (
        custom.custom
        and custom.positive == ("pneumoperitoneum",)
        and custom.negative == ("no pneumoperitoneum",)
    )
    assert text_directions(encoder, chosen).positive.shape[0] == 3


def test_planted_signal_is_carried_end_to_end(planted_model_dir):
    """A tiny model trained on blob films ranks held-out blob films above clean ones (AUROC >= 0.9)."""
    from sklearn.metrics import roc_auc_score

    from meddx.dev.tiny import PLANTED_FINDING, synthetic_film

    encoder = load_encoder(f"local-dir:{planted_model_dir}")
    directions = text_directions(encoder, [load_vocabulary().finding(PLANTED_FINDING)])
    rng = np.random.default_rng(2024)
    labels = [i % 2 == 0 for i in range(80)]
    films = [synthetic_film(rng, size=200, blob=y) for y in labels]
    pixels = torch.stack([encoder.preprocess(Image.fromarray(f.pixels))[0] for f in films])
    with torch.no_grad():
        scores = zero_shot_probabilities(directions.logits(encoder.embed_images(pixels)))[:, 0].numpy()
    assert roc_auc_score(labels, scores) >= 0.9


def test_directions_persist_on_disk_across_restarts(tiny_model_dir, tmp_path, monkeypatch):
    import meddx.model.zero_shot as scoring
    from meddx.model.encoder import clear_cache

    findings = list(load_vocabulary().findings)
    clear_cache()
    first = text_directions(load_encoder(f"local-dir:{tiny_model_dir}"), findings, cache_dir=tmp_path)
    assert list(tmp_path.rglob("*.safetensors"))
    clear_cache()  # a "restart": new encoder, empty memory cache

    def fail(*args, **kwargs):
        raise AssertionError("text tower should not run when the disk cache holds the directions")

    monkeypatch.setattr(scoring, "_ensemble", fail)
    second = text_directions(load_encoder(f"local-dir:{tiny_model_dir}"), findings, cache_dir=tmp_path)
    torch.testing.assert_close(first.positive, second.positive)
    torch.testing.assert_close(first.negative, second.negative)
    clear_cache()


def test_custom_labels_stay_off_disk_and_are_bounded_in_memory(tiny_model_dir, tmp_path, monkeypatch):
    """A user's own labels are not written anywhere, and memory holds only the most recent ones."""
    from safetensors.torch import load_file

    import meddx.model.zero_shot as scoring
    from meddx.model.encoder import clear_cache

    monkeypatch.setattr(scoring, "MAX_CUSTOM_DIRECTIONS", 3)
    clear_cache()
    encoder = load_encoder(f"local-dir:{tiny_model_dir}")
    vocabulary = load_vocabulary()
    text_directions(encoder, [vocabulary.finding("nodule")], cache_dir=tmp_path)
    (store,) = tmp_path.rglob("*.safetensors")
    on_disk = set(load_file(store))
    labels = [vocabulary.custom(f"mass number {n}") for n in range(5)]
    first = text_directions(encoder, labels[:1], cache_dir=tmp_path).positive
    for label in labels[1:]:
        text_directions(encoder, [label], cache_dir=tmp_path)
    assert set(load_file(store)) == on_disk  # the store was not rewritten with custom labels
    custom = encoder.direction_cache["_custom"]
    assert list(custom) == [scoring._key(label) for label in labels[2:]]  # the three most recent
    torch.testing.assert_close(
        text_directions(encoder, labels[:1], cache_dir=tmp_path).positive, first
    )  # recomputed the same
    assert len(custom) == 3 and next(reversed(custom)) == scoring._key(labels[0])
    clear_cache()


def test_analyze_with_a_shared_scoring_pass_gives_the_one_film_result(tiny_settings):
    """`batch` actors score a call's films together (`score_studies`) and hand each film its share: the
    analysis is the one-film analysis; a share computed for other findings is refused."""
    from meddx.dev.tiny import synthetic_film
    from meddx.io import load_study
    from meddx.pipeline import analyze, score_studies

    rng = np.random.default_rng(4)
    films = []
    for size in (140, 180):
        buffer = io.BytesIO()
        Image.fromarray(synthetic_film(rng, size=size, blob=True).pixels).save(buffer, format="PNG")
        films.append(load_study(buffer.getvalue()))
    labels = ["effusion", "nodule", "pneumothorax"]
    shares = score_studies(films, labels=labels, settings=tiny_settings)
    for study, share in zip(films, shares, strict=True):
        alone = analyze(study, "cough", labels=labels, settings=tiny_settings, top_k=1)
        shared = analyze(study, "cough", labels=labels, settings=tiny_settings, top_k=1, scored=share)
        assert [f.id for f in shared.findings] == [f.id for f in alone.findings]
        for a, b in zip(alone.findings, shared.findings, strict=True):
            assert abs(a.probability - b.probability) <= 1e-4 and a.flagged == b.flagged
        assert set(shared.maps) == set(alone.maps)
    with pytest.raises(ValueError, match="other findings"):
        analyze(films[0], labels=["effusion"], settings=tiny_settings, top_k=0, scored=shares[0])


def test_a_failing_shared_pass_falls_back_to_one_film_at_a_time():
    pytest.importorskip("pyarrow")
    from meddx.batch.score import Options, Score

    actor = Score.__new__(Score)  # no Ray, no warm-up: only the batching logic
    actor.options, actor.settings = Options(), None

    def failing(studies, **kwargs):
        raise RuntimeError("CUDA out of memory")

    actor.score_studies = failing
    assert actor.score_together({0: "film a", 3: "film b"}) == {}
    actor.score_studies = lambda studies, **kwargs: [f"pass of {s}" for s in studies]
    assert actor.score_together({0: "film a", 3: "film b"}) == {0: "pass of film a", 3: "pass of film b"}
    assert actor.score_together({5: "one film"}) == {}  # alone: analyze scores it itself
