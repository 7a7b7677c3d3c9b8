"""The lung-mask films for `train-anatomy`: reading, right/left labels, and the split by patient.

The data folder holds ``manifest.csv`` and ``images/``/``masks/`` of 512 px grey PNGs (one combined lung mask
per film, threshold > 127). The two large components are the lungs; the one on the image's left is the
patient's right lung. Specks (< 1 % of the film) are dropped. One film is one patient in both sources
(Montgomery ``MCUCXR_0001_0``, Shenzhen ``CHNCXR_0001_0``), so a split by film name is a split by patient.

Split: within each source and TB label, the patients are shuffled with the seed; ``test_fraction`` of them
are held out for the final measurement, and ``val_fraction`` of the rest choose the best checkpoint.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from meddx.errors import InputError

SPECK = 0.01  # components below this fraction of the film are not lungs
BACKGROUND, RIGHT, LEFT = 0, 1, 2


@dataclass(frozen=True)
class Film:
    """One film of the data set: its name, source and TB label, and the paths of image and mask."""

    name: str
    source: str
    tb: int
    image: Path
    mask: Path


@dataclass(frozen=True)
class Split:
    """Film names by role."""

    train: tuple[Film, ...]
    val: tuple[Film, ...]
    test: tuple[Film, ...]


def read_manifest(folder: Path) -> list[Film]:
    """Every film listed in ``folder/manifest.csv``."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{folder} has no manifest.csv: point --data at the lung_masks folder.")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    films = [
        Film(
            name=Path(row["image"]).stem,
            source=row["source_set"],
            tb=int(row["tb_label"]),
            image=folder / row["image"],
            mask=folder / row["mask"],
        )
        for row in rows
    ]
    if not films:
        raise InputError(f"{manifest} lists no films.")
    return films


def split(films: list[Film], *, seed: int, test_fraction: float = 0.25, val_fraction: float = 0.1) -> Split:
    """Split by patient within each (source, TB label) group, seeded."""
    rng = random.Random(seed)
    roles: dict[str, list[Film]] = {"train": [], "val": [], "test": []}
    groups: dict[tuple[str, int], list[Film]] = {}
    for film in sorted(films, key=lambda f: f.name):
        groups.setdefault((film.source, film.tb), []).append(film)
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        n_test = max(1, round(len(group) * test_fraction))
        rest = group[n_test:]
        n_val = max(1, round(len(rest) * val_fraction))
        roles["test"] += group[:n_test]
        roles["val"] += rest[:n_val]
        roles["train"] += rest[n_val:]
    return Split(**{role: tuple(sorted(items, key=lambda f: f.name)) for role, items in roles.items()})


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit grey image as a 2-D uint8 array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def lung_labels(mask: np.ndarray) -> np.ndarray:
    """A combined lung mask (uint8, > 127 = lung) as labels: 0 background, 1 patient's right, 2 left."""
    binary = (mask > 127).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= SPECK * binary.size]
    out = np.zeros(binary.shape, dtype=np.uint8)
    if not keep:
        return out
    largest = sorted(keep, key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:2]
    middle = float(np.mean([centroids[i][0] for i in largest])) if len(largest) == 2 else binary.shape[1] / 2
    for i in keep:
        out[labels == i] = RIGHT if centroids[i][0] < middle else LEFT
    return out
