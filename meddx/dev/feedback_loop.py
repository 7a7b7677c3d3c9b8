"""The feedback loop, simulated on synthetic films: does clinician feedback make the served head better?

Round 0 trains the current head on a small labelled folder. Each later round "analyses" new synthetic films
with the current head (the tiny encoder's embedding, zero-shot and head scores, as the app keeps them),
has a simulated clinician answer ``present`` exactly when the film carries the planted blob (the planted
signal) and ``absent`` otherwise, writes the records through `meddx.train.feedback.FeedbackWriter`, trains a
candidate on the labelled folder plus all feedback so far (``python -m meddx train --data ... --data
feedback:DIR``) and runs ``python -m meddx promote`` against the current head on a fixed held-out folder.
A last round answers every film wrongly (blob films ``absent``, clear films ``present``); promote must
refuse the candidate it produces.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddx.dev.tiny import synthetic_film

FILM_SIZE = 96


def write_films(root: Path, *, positives: int, negatives: int, seed: int) -> Path:
    """An image folder of synthetic films: ``nodule/`` (with the planted blob) and ``no_finding/``."""
    rng = np.random.default_rng(seed)
    for index in range(positives + negatives):
        blob = index < positives
        folder = root / ("nodule" if blob else "no_finding")
        folder.mkdir(parents=True, exist_ok=True)
        film = synthetic_film(rng, size=FILM_SIZE, blob=blob)
        Image.fromarray(film.pixels).save(folder / f"film_{index:03d}.png")
    return root


def give_feedback(
    encoder, head_spec: str | None, folder: Path, *, films: int, seed: int, wrong: bool = False
) -> int:
    """Score ``films`` new synthetic films (a third with the blob), one record each; return the count."""
    from meddx.model.head import encoder_identity
    from meddx.model.head_store import load_head
    from meddx.model.vocabulary import load_vocabulary
    from meddx.model.zero_shot import text_directions
    from meddx.train.embedding_cache import embed_sources
    from meddx.train.feedback import FeedbackRecord, FeedbackWriter

    rng = np.random.default_rng(seed)
    blobs = [index < films // 3 for index in range(films)]
    images = []
    for blob in blobs:
        buffer = io.BytesIO()
        Image.fromarray(synthetic_film(rng, size=FILM_SIZE, blob=blob).pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    embeddings = embed_sources(encoder, images)
    nodule = load_vocabulary().lookup("nodule")
    zero_shot = torch.sigmoid(text_directions(encoder, [nodule]).logits(embeddings))[:, 0].tolist()
    if head_spec is None:
        fine_tuned = [None] * films
    else:
        fine_tuned = load_head(head_spec).probabilities(embeddings)[:, 0].tolist()
    writer = FeedbackWriter(folder)
    model = encoder_identity(encoder).to_dict()
    for index, blob in enumerate(blobs):
        writer.write(
            FeedbackRecord.create(
                model=model,
                embedding=embeddings[index].tolist(),
                scores={"nodule": {"zero_shot": zero_shot[index], "fine_tuned": fine_tuned[index]}},
                labels={"nodule": "present" if blob != wrong else "absent"},
                scoring_mode="both",
            )
        )
    return films


def run_loop(
    root: str | Path,
    *,
    model_spec: str,
    labelled: int = 12,
    per_round: int = 48,
    rounds: int = 4,
    wrong: int = 200,
    held_out: tuple[int, int] = (30, 60),
    quiet: bool = True,
) -> list[dict]:
    """Run the loop in ``root``; one row per round: records, the promote decision and its numbers."""
    from meddx.cli.train import run_promote, run_train
    from meddx.model.encoder import load_encoder
    from meddx.model.head_store import clear_head_cache

    root = Path(root)
    labelled_dir = write_films(
        root / "labelled", positives=labelled // 3, negatives=labelled - labelled // 3, seed=1
    )
    held_dir = write_films(root / "held_out", positives=held_out[0], negatives=held_out[1], seed=100)
    feedback_dir, current = root / "feedback", root / "current"
    common = ["--model", model_spec, "--cache-dir", str(root / "embeddings")]
    sink = io.StringIO()
    silent = (
        (contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink))
        if quiet
        else (contextlib.nullcontext(),) * 2
    )
    encoder = load_encoder(model_spec)
    rows, records = [], 0
    with silent[0], silent[1]:
        if run_train(["--data", str(labelled_dir), "--out", str(current), *common]) != 0:
            raise RuntimeError(f"round 0 training failed: {sink.getvalue()[-2000:]}")
        plan = [(r, per_round, False) for r in range(1, rounds + 1)] + [(rounds + 1, wrong, True)]
        for number, films, is_wrong in plan:
            clear_head_cache()
            records += give_feedback(
                encoder,
                f"local-dir:{current}",
                feedback_dir / f"round-{number}",
                films=films,
                seed=1000 + number,
                wrong=is_wrong,
            )
            candidate, decision = root / f"candidate-{number}", root / f"decision-{number}.json"
            args = [
                "--data",
                str(labelled_dir),
                "--data",
                f"feedback:{feedback_dir}",
                "--out",
                str(candidate),
            ]
            if run_train([*args, *common]) != 0:
                raise RuntimeError(f"round {number} training failed: {sink.getvalue()[-2000:]}")
            heads = ["--candidate", str(candidate), "--current", str(current)]
            code = run_promote([*heads, "--data", str(held_dir), *common, "--json", str(decision)])
            entry = json.loads(decision.read_text())
            rows.append(
                {
                    "round": number,
                    "wrong": is_wrong,
                    "records": records,
                    "exit_status": code,
                    "decision": entry["decision"],
                    "reasons": entry["reasons"],
                    **{k: entry["findings"]["nodule"][k] for k in ("candidate", "current", "difference")},
                }
            )
    return rows


def format_rows(rows: list[dict]) -> str:
    """A Markdown table of `run_loop`'s rows."""
    lines = [
        "| round | feedback records | candidate AUROC (95% CI) | current AUROC (95% CI) "
        "| difference (95% CI) | decision |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = []
        for key in ("candidate", "current", "difference"):
            low, high = row[key]["ci"]
            form = "+.3f" if key == "difference" else ".3f"
            cells.append(f"{row[key]['auroc']:{form}} ({low:{form}} to {high:{form}})")
        label = f"{row['round']} (wrong answers)" if row["wrong"] else str(row["round"])
        lines.append(f"| {label} | {row['records']} | " + " | ".join(cells) + f" | {row['decision']} |")
    return "\n".join(lines)
