"""Sample faces that ship with scikit-image: nothing here downloads.

``skimage.data.astronaut`` and ``skimage.data.lfw_subset`` are files inside the scikit-image wheel (the
``data`` extra: ``pip install "resnet-arcface[data]"``).
"""
import numpy as np
import torch

from .._optional import require

# Rows/cols of Eileen Collins' face in skimage.data.astronaut() (512x512), found by eye.
_ASTRONAUT_FACE = (slice(20, 220), slice(150, 330))


def astronaut_face() -> torch.Tensor:
    """NASA astronaut Eileen Collins' face from scikit-image, RGB float in [0, 1], shape ``(3, 200, 180)``."""
    data = require("skimage.data", "data", "astronaut_face")

    img = data.astronaut()[_ASTRONAUT_FACE]  # (H, W, 3) uint8
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255


def lfw_faces(n: int = 8) -> torch.Tensor:
    """The first ``n`` (at most 100) Labeled-Faces-in-the-Wild crops shipped with scikit-image.

    Returns grayscale floats in [0, 1] of shape ``(n, 1, 25, 25)``; they are tiny, so
    :func:`preprocess` upsamples them. (The subset's last 100 images are non-faces.)
    """
    data = require("skimage.data", "data", "lfw_faces")

    if not 1 <= n <= 100:
        raise ValueError(f"lfw_faces: n must be between 1 and 100 (the subset holds 100 faces), got {n}.")
    faces = data.lfw_subset()[:n]  # (n, 25, 25) float64
    return torch.from_numpy(faces).float().unsqueeze(1)
