"""From images to the network's input: one transform, built from the model's ``pretrained_cfg``.

The input convention (the one rule every public function follows)
-----------------------------------------------------------------
There are exactly two kinds of input, and a function's signature says which one it takes:

- **images**: what a data set holds. Float tensors (or arrays) with values in [0, 1], RGB or gray, any size,
  ``(N, C, H, W)`` or one ``(C, H, W)``, ``C`` in {1, 3}. A parameter that takes these is named ``images``
  (or the function's name says ``image``/``face``). :func:`embed`, :func:`evaluate`, :func:`fit`,
  :func:`preprocess` and the transform below take images.
- **network input** ``x``: what the network computes on, ``(N, 1, S, S)`` float gray in [-1, 1] with
  ``S = model.input_size``. ``model(x)``, the :class:`~resnet_arcface.deploy.inference.Embedder` that
  :func:`~resnet_arcface.deploy.inference.optimize` returns, and every module take ``x``.

The transform is the only bridge from the first to the second:
``x = transform_for(model)(images)``. It follows GFPGAN's steps exactly, in GFPGAN's order
(``gray_resize_for_identity`` on images that GFPGAN normalised to [-1, 1]):

1. normalise every channel with the cfg's mean and std (0.5 and 0.5: [0, 1] becomes [-1, 1]);
2. RGB to gray with the cfg's luma weights, ``0.2989 R + 0.5870 G + 0.1140 B``;
3. resize to ``input_size`` with bilinear interpolation (``align_corners=False``).

The order matters at the fourth decimal: the luma weights sum to 0.9999, so normalising after the gray
conversion would shift every value by 1e-4. :func:`preprocess` is the same transform for a given size, and
additionally accepts images already in [-1, 1] (``value_range=(-1, 1)``, the generator outputs GFPGAN's
identity loss compares).

Embeddings: ``model(x)`` and ``Embedder(x)`` return them as the network computes them; :func:`embed`
and ``Embedder(x, normalize=True)`` return rows of unit L2 norm (what verification compares).
"""
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import INPUT_SIZE, LUMA, PretrainedCfg

__all__ = ["LUMA", "PretrainedCfg", "Transform", "create_transform", "resolve_cfg", "transform_for", "preprocess",
           "to_gray"]

#: Interpolation modes the transform accepts (``torch.nn.functional.interpolate``'s 2-D modes).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB -> ``(N, 1, H, W)`` luma, ``0.2989 R + 0.5870 G + 0.1140 B``."""
    return _luma(images, LUMA)


def _luma(images: torch.Tensor, weights: Tuple[float, float, float]) -> torch.Tensor:
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return weights[0] * r + weights[1] * g + weights[2] * b


def resolve_cfg(model: nn.Module) -> PretrainedCfg:
    """The input configuration of ``model``: its ``pretrained_cfg``.

    Every :class:`~resnet_arcface.ResNetArcFace` carries one. A module without it (a learner's own network,
    for instance) is described by its ``input_size`` attribute if it has one, else by GFPGAN's 128; the
    other fields are GFPGAN's.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, PretrainedCfg):
        return cfg
    return PretrainedCfg(input_size=int(getattr(model, "input_size", INPUT_SIZE)))


class Transform:
    """Images (float in [0, 1], gray or RGB, any size) -> the network's input; see the module docstring.

    Build it with :func:`create_transform` or :func:`transform_for`. It has no state besides its cfg and
    works on any device (the output is on the images' device) and under autograd.

    Shape:
        - Input: ``(N, C, H, W)`` or ``(C, H, W)``, ``C`` in {1, 3}.
        - Output: ``(N, 1, S, S)`` float32, ``S = cfg.input_size``, values in ``cfg.value_range``.
    """

    def __init__(self, cfg: PretrainedCfg) -> None:
        if not isinstance(cfg, PretrainedCfg):
            raise ValueError(f"create_transform expects a PretrainedCfg (e.g. model.pretrained_cfg), "
                             f"got {type(cfg).__name__}.")
        if cfg.channels != 1:
            raise ValueError(f"The transform makes gray input (channels=1), as the network takes; got channels="
                             f"{cfg.channels}.")
        if cfg.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {cfg.interpolation!r}.")
        if not cfg.std > 0:
            raise ValueError(f"std must be positive, got {cfg.std!r}.")
        self.cfg = cfg

    def __call__(self, images: Union[torch.Tensor, np.ndarray],
                 value_range: Tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """Transform ``images`` whose values live in ``value_range`` (default [0, 1])."""
        images = _check_images(images)
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, e.g. (0, 1) or (-1, 1); "
                             f"got {value_range!r}.")
        cfg = self.cfg
        unit = (images.float() - lo) / (hi - lo)  # to [0, 1], the range the cfg's mean and std refer to
        images = (unit - cfg.mean) / cfg.std  # GFPGAN's Normalize(0.5, 0.5): [-1, 1]; before the gray conversion
        if images.shape[1] == 3:
            images = _luma(images, cfg.luma)
        size = (cfg.input_size, cfg.input_size)
        align = {"align_corners": False} if cfg.interpolation in ("bilinear", "bicubic") else {}
        return F.interpolate(images, size=size, mode=cfg.interpolation, **align)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"Transform(images in [0, 1] -> (N, 1, {c.input_size}, {c.input_size}) in {c.value_range}: "
                f"(x - {c.mean}) / {c.std}, luma {c.luma}, {c.interpolation} resize)")


def create_transform(cfg: PretrainedCfg) -> Transform:
    """The transform that ``cfg`` describes (timm's ``create_transform``, for this network's one input)."""
    return Transform(cfg)


def transform_for(model: nn.Module) -> Transform:
    """The transform that feeds ``model``: ``transform_for(model)(images)`` is ``model``'s input."""
    return Transform(resolve_cfg(model))


def preprocess(images: Union[torch.Tensor, np.ndarray], value_range: Tuple[float, float] = (0.0, 1.0),
               size: int = INPUT_SIZE) -> torch.Tensor:
    """Turn images into the network's input exactly as GFPGAN does.

    GFPGAN normalises its images to [-1, 1] (mean 0.5, std 0.5), converts RGB to luma with
    :data:`LUMA` and resizes bilinearly to 128x128 (``align_corners=False``); its pretrained
    identity network therefore expects gray values in [-1, 1]. This function does the same three
    steps in the same order: it is ``create_transform(PretrainedCfg(input_size=size))``. ``size``
    feeds a network built with another ``input_size`` (e.g. :func:`resnet_arcface.resnet_arcface_small`'s
    32) the same way; ``transform_for(model)`` reads it from the model.

    Args:
        images: RGB or grayscale floats, batched ``(N, C, H, W)`` or single ``(C, H, W)``, with ``C``
            in {1, 3}, of any size.
        value_range: The range the images' values live in: ``(0, 1)`` (default) or ``(-1, 1)`` for
            tensors that are already normalised the way GFPGAN's are.
        size: Side of the output; the network's ``input_size`` (default: GFPGAN's 128).

    Shape:
        - Input: ``(N, C, H, W)`` or ``(C, H, W)``, ``C`` in {1, 3}
        - Output: ``(N, 1, size, size)``, float32, values in [-1, 1]
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"preprocess: size must be a positive int (the network's input_size, e.g. 128 or 32); "
                         f"got {size!r}.")
    return Transform(PretrainedCfg(input_size=size))(images, value_range)


def _check_images(images: object) -> torch.Tensor:
    """``images`` as a 4-D float tensor with 1 or 3 channels, or a ``ValueError`` that says how to get one."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"preprocess expects a tensor or array of images, got {type(images).__name__}.")
    if not images.is_floating_point():
        raise ValueError(f"preprocess expects float images in [0, 1], got dtype {images.dtype}; "
                         f"divide uint8 images by 255 first: images.float() / 255.")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"preprocess expects (N, C, H, W) or (C, H, W) with C = 1 (gray) or 3 (RGB), got shape "
                         f"{tuple(images.shape)}. For an (H, W, C) array from an image library use .permute(2, 0, 1).")
    return images
