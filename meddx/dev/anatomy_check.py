"""Check the shipped lung-field model where CI cannot: ``python -m meddx.dev.anatomy_check``.

- ``--samples DIR``: every film in DIR (PNG, JPEG, DICOM) through `read_anatomy`: whether
  it passes the chest-film check (all real chest films should), the CTR (with the view), the time; with
  ``--out``, each film with its lung outlines and the CTR's two widths drawn (``<film>.anatomy.png``).
- ``--non-chest N``: N generated images of each kind in `meddx.dev.non_chest`; how many are refused.
- ``--data DIR``: the lung-mask set: on its held-out films (the split of ``--seed``), the CTR from the
  hand-drawn masks against the CTR from the model's fields (mean and largest difference, correlation), and
  the share of the hand-drawn masks that pass the check.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

FILM_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif", ".tiff", ".webp"}


def _drawn(grey: np.ndarray, anatomy) -> np.ndarray:
    from meddx.anatomy import ctr

    height, width = grey.shape
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if anatomy.fields is None:
        return image
    image[anatomy.fields.outline(height, width)] = (255, 255, 0)
    found = ctr.widths(anatomy.fields)
    if found is not None:
        side = anatomy.fields.side
        for (row, x0, x1), colour in ((found.heart_at, (255, 60, 60)), (found.thorax_at, (60, 160, 255))):
            y = int((row + 0.5) * height / side)
            cv2.line(
                image, (int(x0 * width / side), y), (int(x1 * width / side), y), colour, max(2, width // 300)
            )
    return image


def samples(folder: Path, out: Path | None) -> list[dict]:
    from meddx.anatomy import ctr
    from meddx.anatomy.reading import read_anatomy
    from meddx.io import load_study

    rows = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in FILM_SUFFIXES):
        study = load_study(path)
        view = study.info.view_position
        anatomy = read_anatomy(study.pixels, view)
        ratio = ctr.estimate(anatomy.fields, "PA") if anatomy.fields is not None else None
        rows.append(
            {
                "film": path.name,
                "view": view,
                "chest_film": anatomy.chest_film,
                "reasons": list(anatomy.check.reasons),
                "ctr_any_view": None if ratio is None else round(ratio.ratio, 3),
                "ctr_shown": anatomy.ctr_text(),
                "seconds": round(anatomy.seconds, 3),
            }
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            image = _drawn(study.pixels, anatomy)
            cv2.imwrite(str(out / f"{path.stem}.anatomy.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return rows


def non_chest(count: int) -> dict:
    from meddx.anatomy.reading import read_anatomy
    from meddx.dev.non_chest import KINDS, non_chest_image

    refused = {}
    for kind in KINDS:
        images = [non_chest_image(kind, seed) for seed in range(count)]
        greys = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) if i.ndim == 3 else i for i in images]
        refused[kind] = sum(not read_anatomy(g).chest_film for g in greys)
    return {"per_kind": count, "refused": refused, "refused_total": sum(refused.values()),
            "total": count * len(KINDS)}  # fmt: skip


def ctr_agreement(data: Path, seed: int) -> dict:
    from meddx.anatomy import ctr, fields, network, plausibility
    from meddx.train import anatomy_data

    split = anatomy_data.split(anatomy_data.read_manifest(data), seed=seed)
    pairs, passed, by_source = [], 0, {}
    for film in split.test:
        grey = anatomy_data.read_grey(film.image)
        labels = anatomy_data.lung_labels(anatomy_data.read_grey(film.mask))
        hand = fields.from_masks(labels == 1, labels == 2)
        x = network.prepare(grey)
        passed += plausibility.check(hand, x[0, 0].numpy()).plausible
        truth, model = ctr.estimate(hand, "PA"), ctr.estimate(fields.segment(x), "PA")
        if truth is not None and model is not None:
            pairs.append((truth.ratio, model.ratio))
            by_source.setdefault(film.source, []).append(abs(truth.ratio - model.ratio))
    a = np.array(pairs)
    diff = np.abs(a[:, 0] - a[:, 1])
    return {
        "held_out_films": len(split.test),
        "compared": len(a),
        "hand_masks_pass_check": passed,
        "mean_abs_diff": round(float(diff.mean()), 4),
        "median_abs_diff": round(float(np.median(diff)), 4),
        "p90_abs_diff": round(float(np.percentile(diff, 90)), 4),
        "max_abs_diff": round(float(diff.max()), 4),
        "pearson_r": round(float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]), 4),
        "same_side_of_0.5": round(float(np.mean((a[:, 0] > 0.5) == (a[:, 1] > 0.5))), 4),
        "hand_ctr_mean": round(float(a[:, 0].mean()), 4),
        "mean_abs_diff_by_source": {k: round(float(np.mean(v)), 4) for k, v in by_source.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meddx.dev.anatomy_check", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--non-chest", type=int, default=0)
    p.add_argument("--data", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    report: dict = {}
    if args.samples:
        report["samples"] = samples(args.samples, args.out)
        report["samples_passed"] = sum(r["chest_film"] for r in report["samples"])
    if args.non_chest:
        report["non_chest"] = non_chest(args.non_chest)
    if args.data:
        report["ctr_agreement"] = ctr_agreement(args.data, args.seed)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
