"""Augmentation of training batches: :data:`AUGMENTATIONS`, the names :class:`~resnet_arcface.learn.config.TrainConfig`
accepts for ``augment``.

An augmentation is a function ``f(images, generator) -> images``. It takes a batch of images ``(N, C, H, W)``,
float in [0, 1], on the training device, and returns a batch of the same shape, dtype, device and range. All its
randomness must come from ``generator``, a CPU :class:`torch.Generator` that :func:`resnet_arcface.fit` seeds
for each epoch from ``TrainConfig.seed``, so a resumed run sees exactly the batches an uninterrupted one would
(draw on the CPU, e.g. ``torch.rand(n, generator=generator)``, then move the draw to ``images.device``). It must
not change who the face is: identity is the label.
"""
from typing import Callable, Dict

import torch

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def no_augmentation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch unchanged (``augment="none"``).

    Shape:
        - images: ``(N, C, H, W)``; output: the same tensor.
    """
    return images


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (``augment="flip"``).

    Faces are nearly symmetric, and a mirrored photo is still the same person, so a flip doubles the poses seen
    at no cost. One draw per image, from ``generator``.

    Shape:
        - images: ``(N, C, H, W)`` float in [0, 1]; output: the same shape.
    """
    mirror = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mirror[:, None, None, None], images.flip(3), images)


#: Augmentations by name (``TrainConfig.augment``): name -> ``f(images, generator) -> images``.
AUGMENTATIONS: Dict[str, Augmentation] = {"none": no_augmentation, "flip": random_flip}
