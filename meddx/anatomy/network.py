"""The lung-field network: a small MONAI U-Net, its input preparation, and loading the shipped weights.

The network takes one grey film squashed to ``SIZE`` x ``SIZE`` (the training films were squashed to a
square too) and returns three logits per pixel: background, the patient's **right** lung (on the image's
left on a frontal film) and the patient's **left** lung. Input: the film's grey values scaled so that its
1st and 99th percentiles map to 0 and 1 (clipped), which makes 8-bit PNGs, 16-bit DICOMs and JPEGs alike.

`load_network` reads ``weights/lung_unet.safetensors`` and refuses a file whose SHA-256 differs from the one
in ``weights/lung_unet.json`` (the card's machine-readable half).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from meddx.errors import ModelError

SIZE = 256  # the network's input side, in pixels
CLASSES = ("background", "right lung", "left lung")
CHANNELS = (8, 16, 32, 64, 128)
STRIDES = (2, 2, 2, 2)
RESIDUAL_UNITS = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "lung_unet.safetensors"
CARD_FILE = WEIGHTS_DIR / "lung_unet.json"


def build_network() -> torch.nn.Module:
    """The untrained architecture (MONAI's `UNet`, 2-D, one input channel, three classes)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=len(CLASSES),
        channels=CHANNELS,
        strides=STRIDES,
        num_res_units=RESIDUAL_UNITS,
    )


def normalise(grey: np.ndarray) -> np.ndarray:
    """Grey values (any dtype, 2-D) scaled so that the 1st/99th percentiles become 0/1, clipped, float32."""
    grey = np.asarray(grey, dtype=np.float32)
    low, high = np.percentile(grey, [1.0, 99.0])
    if high - low < 1e-6:
        return np.zeros_like(grey, dtype=np.float32)
    return np.clip((grey - low) / (high - low), 0.0, 1.0).astype(np.float32)


def prepare(grey: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """A 2-D film as the network's input: ``(1, 1, size, size)`` float32, normalised, squashed to a square.

    A film larger than ``2 * size`` is first shrunk (area average, aspect kept) to that side: percentiles
    of a 3000 px film cost seconds and say nothing more (the training films were 512 px: unchanged)."""
    grey = np.asarray(grey)
    if grey.dtype not in (np.uint8, np.uint16, np.float32):
        grey = grey.astype(np.float32)
    height, width = grey.shape
    if max(height, width) > 2 * size:
        scale = 2 * size / max(height, width)
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, shape, interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(normalise(grey))[None, None]
    return F.interpolate(x, size=(size, size), mode="area" if min(x.shape[-2:]) >= size else "bilinear")


@dataclass(frozen=True)
class Card:
    """The machine-readable part of the weights card."""

    sha256: str
    size: int
    classes: tuple[str, ...]
    licence: str
    data: str
    metrics: dict


def read_card(path: Path = CARD_FILE) -> Card:
    """The shipped weights' card (``lung_unet.json``)."""
    raw = json.loads(path.read_text())
    return Card(
        sha256=raw["sha256"],
        size=int(raw["size"]),
        classes=tuple(raw["classes"]),
        licence=raw["licence"],
        data=raw["data"],
        metrics=raw.get("metrics", {}),
    )


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def load_network(path: Path = WEIGHTS_FILE, card_path: Path = CARD_FILE) -> torch.nn.Module:
    """The trained network in eval mode; its file must match the card's checksum."""
    from safetensors.torch import load_file

    if not path.is_file() or not card_path.is_file():
        raise ModelError(f"The lung-field weights are missing ({path.name}): reinstall meddx.")
    card = read_card(card_path)
    if sha256(path) != card.sha256:
        raise ModelError(
            f"The lung-field weights {path.name} do not match their card's checksum: reinstall meddx."
        )
    net = build_network()
    net.load_state_dict(load_file(str(path)))
    return net.eval()
