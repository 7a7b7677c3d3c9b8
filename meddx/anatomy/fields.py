"""The lung fields of one film: the network's right and left lung probabilities, and masks at any size.

`LungFields` holds the two lungs' probabilities on the network's square (``SIZE`` x ``SIZE``), covering the
whole film squashed to a square; a mask at the film's size (or any other) is the probability resized
bilinearly and thresholded at 0.5, so outlines stay smooth on a 3000 px film. Each lung keeps its largest
connected component only (specks elsewhere are not lung). `from_masks` builds fields from hand-made masks:
the geometry, the naming and the checks can be tested without the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import torch

from meddx.anatomy import network

RIGHT, LEFT = "right", "left"  # the patient's sides: right lung on the image's left on a frontal film


@dataclass(frozen=True)
class LungFields:
    """Right and left lung probabilities on a square covering the whole film.

    Attributes:
        right: (S, S) float32 in [0, 1], the patient's right lung (the image's left).
        left: (S, S) float32 in [0, 1], the patient's left lung.
    """

    right: np.ndarray
    left: np.ndarray

    @property
    def side(self) -> int:
        return self.right.shape[0]

    @cached_property
    def labels(self) -> np.ndarray:
        """(S, S) uint8: 0 outside, 1 right lung, 2 left lung, each lung its largest component only."""
        return _labels(self.right, self.left)

    def lung(self, side: str) -> np.ndarray:
        """(S, S) bool mask of one lung (`RIGHT` or `LEFT`)."""
        return self.labels == (1 if side == RIGHT else 2)

    def masks(self, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 labels (0/1/2) for a film of that size, smooth at any scale."""
        if (height, width) == (self.side, self.side):
            return self.labels
        keep = [self.lung(RIGHT), self.lung(LEFT)]
        grown = [cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) for m in keep]
        probs = [
            np.where(g > 0, p, 0.0).astype(np.float32)
            for g, p in zip(grown, (self.right, self.left), strict=True)
        ]
        big = [cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in probs]
        out = np.zeros((height, width), np.uint8)
        out[(big[0] >= 0.5) & (big[0] >= big[1])] = 1
        out[(big[1] >= 0.5) & (big[1] > big[0])] = 2
        return out

    def outline(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool: the lungs' outlines, about 1/300 of the film's side thick."""
        labels = self.masks(height, width)
        thickness = max(1, round(max(height, width) / 300))
        out = np.zeros((height, width), np.uint8)
        for value in (1, 2):
            contours, _ = cv2.findContours(
                (labels == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(out, contours, -1, 1, thickness)
        return out.astype(bool)


def _largest(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _labels(right: np.ndarray, left: np.ndarray) -> np.ndarray:
    r = (right >= 0.5) & (right >= left)
    lf = (left >= 0.5) & (left > right)
    out = np.zeros(right.shape, np.uint8)
    out[_largest(r)] = 1
    out[_largest(lf)] = 2
    return out


def from_masks(right: np.ndarray, left: np.ndarray, side: int = network.SIZE) -> LungFields:
    """Fields from two boolean masks of any (equal) film size, squashed to ``side`` (tests, hand checks)."""

    def squash(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)

    return LungFields(right=squash(right), left=squash(left))


def segment(x: torch.Tensor, net: torch.nn.Module | None = None) -> LungFields:
    """The lung fields of a film prepared by `network.prepare`, by the shipped network (or ``net``)."""
    net = net or network.load_network()
    with torch.inference_mode():
        probs = torch.softmax(net(x), dim=1)[0].numpy()
    return LungFields(right=probs[1].astype(np.float32), left=probs[2].astype(np.float32))
