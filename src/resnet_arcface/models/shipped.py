"""The weights that ship inside the package, trained on synthetic identities: :func:`pretrained`.

:mod:`resnet_arcface.learn.recipe` trains them (``make weights``); ``weights/<name>.json`` beside them records
the recipe, the network's configuration and open-set verification on identities the network never saw.
"""
import json
from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..nn.model import SMALL_CONFIG, ResNetArcFace
from .checkpoint import load_checkpoint
#: Where the shipped weights live (package data: see pyproject.toml).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Names :func:`pretrained` knows.
AVAILABLE = ("synthetic",)


def _check_name(name: str) -> None:
    if name not in AVAILABLE:
        raise ValueError(f"Unknown pretrained weights {name!r}; available: {list(AVAILABLE)}.")
    if not (WEIGHTS_DIR / f"{name}.pt").is_file() or not (WEIGHTS_DIR / f"{name}.json").is_file():
        raise FileNotFoundError(f"The {name!r} weights are missing from {WEIGHTS_DIR}; rebuild them with "
                                f"`make weights` (or arcface-weights).")


def metrics(name: str = "synthetic") -> Dict[str, Any]:
    """The ``<name>.json`` that ships with the weights: recipe, configuration and verification results."""
    _check_name(name)
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def pretrained(name: str = "synthetic", map_location: Union[str, torch.device] = "cpu") -> ResNetArcFace:
    """A network with the package's own trained weights, in eval mode.

    ``"synthetic"`` is :func:`resnet_arcface.resnet_arcface_small` (32x32 gray input, 128-d embedding)
    trained with ArcFace on synthetic identities; see :func:`metrics` for how well it verifies unseen ones.
    The weights are read with :func:`resnet_arcface.load_checkpoint` (``weights_only``, strict keys).

    Args:
        name: Which weights; one of :data:`AVAILABLE`.
        map_location: Where to load the tensors.

    Returns:
        The network in eval mode (BatchNorm uses its running statistics, dropout is off).

    Shape:
        - Input: ``(N, 1, 32, 32)`` in [-1, 1]: ``preprocess(images, size=model.input_size)``.
        - Output: ``(N, 128)``, the embedding.
    """
    _check_name(name)
    config = dict(metrics(name)["model"])
    config["layers"], config["widths"] = tuple(config["layers"]), tuple(config["widths"])
    model = ResNetArcFace(**config)
    load_checkpoint(model, WEIGHTS_DIR / f"{name}.pt", map_location=map_location)
    return model.eval()
