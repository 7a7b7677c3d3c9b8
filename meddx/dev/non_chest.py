"""Generated images that are not chest films, for measuring the chest-film check (`meddx.anatomy`).

Five kinds, each seeded: ``photo`` (a colour photo-like scene: sky gradient, a flower of coloured petals,
leaves), ``texture`` (grey multi-scale noise, like fabric or stone), ``circuit`` (a grey circuit-board-like
pattern: traces, pads, chips), ``hand`` (a bright palm and five fingers on a dark background, like a hand
radiograph) and ``knee`` (two bright long bones meeting at a joint, like a knee radiograph). Images are
uint8, RGB for ``photo`` and grey for the rest.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("photo", "texture", "circuit", "hand", "knee")


def _photo(rng: np.random.Generator, size: int) -> np.ndarray:
    yy = np.mgrid[0:size, 0:size][0] / size
    sky = np.stack([90 + 80 * yy, 140 + 60 * yy, 230 - 40 * yy], -1)
    image = sky + rng.normal(0, 6, (size, size, 3))
    centre = rng.uniform(0.3, 0.7, 2) * size
    colour = rng.uniform(120, 255, 3)
    for k in range(int(rng.integers(5, 9))):
        angle = 2 * np.pi * k / 7 + rng.uniform(-0.2, 0.2)
        cx, cy = centre + 0.15 * size * np.array([np.cos(angle), np.sin(angle)])
        axes = (int(size * 0.12), int(size * 0.05))
        cv2.ellipse(image, (int(cx), int(cy)), axes, np.degrees(angle), 0, 360, colour.tolist(), -1)
    cv2.circle(image, tuple(int(c) for c in centre), int(size * 0.07), (240, 200, 40), -1)
    for _ in range(4):
        p = rng.uniform(0, 1, 2) * size
        cv2.ellipse(image, (int(p[0]), int(p[1])), (int(size * 0.1), int(size * 0.03)),
                    float(rng.uniform(0, 180)), 0, 360, (40, 150, 50), -1)  # fmt: skip
    return np.clip(image, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    image = np.zeros((size, size), np.float32)
    for scale in (4, 8, 16, 32, 64):
        noise = rng.normal(0, 1, (scale, scale)).astype(np.float32)
        image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * (32 / scale) ** 0.5
    image = (image - image.min()) / (np.ptp(image) + 1e-6)
    return (40 + 180 * image).astype(np.uint8)


def _circuit(rng: np.random.Generator, size: int) -> np.ndarray:
    image = np.full((size, size), float(rng.uniform(60, 100)), np.float32)
    for _ in range(60):  # traces
        x, y = (rng.integers(0, size, 2)).tolist()
        if rng.random() < 0.5:
            cv2.line(image, (x, y), (int(rng.integers(0, size)), y), 170, int(rng.integers(1, 4)))
        else:
            cv2.line(image, (x, y), (x, int(rng.integers(0, size))), 170, int(rng.integers(1, 4)))
    for _ in range(40):  # pads
        cv2.circle(image, tuple(rng.integers(0, size, 2).tolist()), int(rng.integers(2, 6)), 220, -1)
    for _ in range(6):  # chips
        x, y = rng.integers(0, size - size // 5, 2).tolist()
        w, h = rng.integers(size // 12, size // 5, 2).tolist()
        cv2.rectangle(image, (x, y), (x + w, y + h), 25, -1)
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _hand(rng: np.random.Generator, size: int) -> np.ndarray:
    image = np.full((size, size), 20.0, np.float32)
    palm = (int(size * rng.uniform(0.45, 0.55)), int(size * 0.68))
    cv2.ellipse(image, palm, (int(size * 0.17), int(size * 0.2)), 0, 0, 360, 150, -1)
    for k, angle in enumerate(np.linspace(-60, 60, 5) + rng.uniform(-5, 5, 5)):
        length = size * (0.22 if k in (1, 2, 3) else 0.16)
        rad = np.radians(angle - 90)
        base = np.array(palm) + 0.18 * size * np.array([np.cos(rad), np.sin(rad)])
        tip = base + length * np.array([np.cos(rad), np.sin(rad)])
        cv2.line(image, tuple(base.astype(int)), tuple(tip.astype(int)), 165, int(size * 0.05))
        cv2.line(image, tuple(base.astype(int)), tuple(tip.astype(int)), 215, int(size * 0.018))  # bone
    image = cv2.GaussianBlur(image, (0, 0), 2) + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _knee(rng: np.random.Generator, size: int) -> np.ndarray:
    image = np.full((size, size), 25.0, np.float32)
    cx = int(size * rng.uniform(0.45, 0.55))
    cv2.rectangle(image, (cx - size // 4, 0), (cx + size // 4, size), 110, -1)  # soft tissue
    cv2.rectangle(image, (cx - size // 10, 0), (cx + size // 10, int(size * 0.45)), 200, -1)  # femur
    cv2.ellipse(image, (cx, int(size * 0.45)), (size // 6, size // 14), 0, 0, 180, 200, -1)  # condyles
    cv2.rectangle(image, (cx - size // 9, int(size * 0.53)), (cx + size // 9, size), 195, -1)  # tibia
    cv2.ellipse(image, (cx, int(size * 0.53)), (size // 6, size // 16), 0, 180, 360, 195, -1)
    image = cv2.GaussianBlur(image, (0, 0), 3) + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


MAKERS = {"photo": _photo, "texture": _texture, "circuit": _circuit, "hand": _hand, "knee": _knee}


def non_chest_image(kind: str, seed: int, size: int = 512) -> np.ndarray:
    """One generated image of ``kind`` (a key of `MAKERS`), uint8."""
    return MAKERS[kind](np.random.default_rng(seed), size)
