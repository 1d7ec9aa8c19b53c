"""GFPGAN's preprocessing: RGB or gray images in [0, 1] -> the network's gray input in [-1, 1]."""
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..nn.model import INPUT_SIZE

#: ITU-R BT.601 luma weights, as GFPGAN's ``gray_resize_for_identity`` uses them.
LUMA = (0.2989, 0.5870, 0.1140)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB -> ``(N, 1, H, W)`` luma, ``0.2989 R + 0.5870 G + 0.1140 B``."""
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def preprocess(images: Union[torch.Tensor, np.ndarray], value_range: Tuple[float, float] = (0.0, 1.0),
               size: int = INPUT_SIZE) -> torch.Tensor:
    """Turn images into the network's input exactly as GFPGAN does.

    GFPGAN normalises its images to [-1, 1] (mean 0.5, std 0.5), converts RGB to luma with
    :data:`LUMA` and resizes bilinearly to 128x128 (``align_corners=False``); its pretrained
    identity network therefore expects gray values in [-1, 1]. This function does the same three
    steps in the same order. ``size`` feeds a network built with another ``input_size`` (e.g.
    :func:`resnet_arcface.resnet_arcface_small`'s 32) the same way.

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
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"preprocess: size must be a positive int (the network's input_size, e.g. 128 or 32); "
                         f"got {size!r}.")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, e.g. (0, 1) or (-1, 1); got {value_range!r}.")
    images = (images.float() - lo) / (hi - lo) * 2 - 1  # to GFPGAN's [-1, 1]
    if images.shape[1] == 3:
        images = to_gray(images)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
