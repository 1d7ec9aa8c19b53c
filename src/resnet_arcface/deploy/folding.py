"""Exact BatchNorm folding for inference [Jacob et al. 2018, section 3.2].

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = a * x + b`` with
``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a * running_mean``. When it *follows*
a convolution (or a Linear) the two compose into one convolution with weight ``a * W`` (per
output channel) and bias ``a * bias + b``: the same numbers up to float rounding, one pass
over memory fewer.

The trap: a BatchNorm *before* a zero-padded convolution (the ``bn0`` of every ``IRBlock``)
does not fold. Folding it into the convolution's weights and bias would add the shift ``b``
everywhere, but the real network shifts the input *before* the convolution pads it with
zeros, so at the border the padded zeros stay zeros and never receive ``b``. The folded
network then differs along the one-pixel frame of every map (cosine about 0.997 on a random
network). :func:`fold_batchnorm` therefore leaves ``bn0`` alone. ``bn4`` before ``fc5`` does
fold: a Linear has no padding, so every input it reads really was shifted.
"""
from __future__ import annotations

import copy
from typing import Dict, Tuple

import torch
from torch import nn

from ..nn.blocks import BasicBlock, Bottleneck, IRBlock

__all__ = ["bn_scale_shift", "fold_conv_bn", "fold_linear_bn", "fold_bn_linear", "fold_batchnorm", "FOLDED_PAIRS"]

#: The (convolution, BatchNorm-after-it) attribute pairs of each block type that fold exactly.
#: ``bn0`` is deliberately absent: it comes *before* ``conv1``, which pads with zeros.
FOLDED_PAIRS: Dict[type, Tuple[Tuple[str, str], ...]] = {
    IRBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``y = scale * x + shift`` per channel, in float64 for exact folding.

    Args:
        bn: A ``BatchNorm1d``/``BatchNorm2d`` that tracks running statistics.

    Returns:
        ``(scale, shift)``, each of shape ``(C,)``, float64.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"Cannot fold {bn}: it keeps no running statistics (track_running_stats=False), "
                         "so in eval mode it still normalises with batch statistics, which no fixed weight can do.")
    var = bn.running_var.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.affine:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode BatchNorm that FOLLOWS a convolution into one new convolution.

    ``bn(conv(x)) == folded(x)`` for every ``x`` (up to float rounding): the weight of output
    channel ``c`` is multiplied by ``scale[c]`` and the bias becomes ``scale * bias + shift``.
    The arithmetic is done in float64 and rounded once. Neither argument is modified.

    Args:
        conv: The convolution (any kernel, stride, padding, dilation, groups; with or without bias).
        bn: The BatchNorm applied to its output, with running statistics (they are what eval mode uses).

    Returns:
        A new ``nn.Conv2d`` with a bias, on the convolution's device and dtype.

    Shape:
        - Input: ``(N, conv.in_channels, H, W)``
        - Output: ``(N, conv.out_channels, H', W')``, as ``bn(conv(x))``.
    """
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"fold_conv_bn expects (nn.Conv2d, nn.BatchNorm2d), got ({type(conv).__name__}, "
                         f"{type(bn).__name__}).")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_conv_bn: the BatchNorm has {bn.num_features} channels but the convolution outputs "
                         f"{conv.out_channels}; only a BatchNorm applied to this convolution's output folds into it.")
    scale, shift = bn_scale_shift(bn)
    weight = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)  # scale each output channel's filter
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(shift)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                       padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(scale * bias + shift)
    return folded


def fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Fold an eval-mode ``BatchNorm1d`` that FOLLOWS a Linear (``bn5`` after ``fc5``) into a new Linear."""
    if bn.num_features != linear.out_features:
        raise ValueError(f"fold_linear_bn: the BatchNorm has {bn.num_features} features but the Linear outputs "
                         f"{linear.out_features}.")
    scale, shift = bn_scale_shift(bn)
    bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros_like(shift)
    folded = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device,
                       dtype=linear.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(linear.weight.detach().double() * scale[:, None])
        folded.bias.copy_(scale * bias + shift)
    return folded


def fold_bn_linear(bn: nn.BatchNorm2d, linear: nn.Linear) -> nn.Linear:
    """Fold an eval-mode BatchNorm2d that comes BEFORE a flatten and a Linear (``bn4`` before ``fc5``).

    Exact because a Linear has no padding: every value it reads was shifted by the BatchNorm.
    After flattening ``(C, H, W)``, input feature ``i`` belongs to channel ``i // (H * W)``.
    """
    if linear.in_features % bn.num_features:
        raise ValueError(f"fold_bn_linear: {linear.in_features} Linear inputs are not a whole number of "
                         f"{bn.num_features}-channel maps.")
    scale, shift = bn_scale_shift(bn)
    per_channel = linear.in_features // bn.num_features  # H * W
    scale, shift = scale.repeat_interleave(per_channel), shift.repeat_interleave(per_channel)  # (C*H*W,)
    weight = linear.weight.detach().double()
    bias = linear.bias.detach().double() if linear.bias is not None else weight.new_zeros(linear.out_features)
    folded = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device,
                       dtype=linear.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight * scale[None, :])  # W (s * x + t) + b = (W s) x + (W t + b)
        folded.bias.copy_(weight @ shift + bias)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ResNetArcFace with every exactly-foldable BatchNorm folded away.

    Folds ``conv1``/``bn1`` of the stem, each block's conv-then-BN pairs (:data:`FOLDED_PAIRS`)
    and ``downsample``'s 1x1 conv and BN, then ``bn4`` and ``bn5`` into ``fc5``. A folded
    BatchNorm becomes ``nn.Identity()``, so attribute names and ``forward`` stay the same.
    Every ``bn0`` is left as it is (see the module docstring: it precedes a zero-padded conv).

    Args:
        model: A :class:`~resnet_arcface.ResNetArcFace` (any block type) in eval mode. It is not modified.

    Returns:
        The folded copy, in eval mode. It is for inference only: its BatchNorms no longer exist to train.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first): folding uses the "
                         "running statistics, which is what eval mode computes; train mode uses batch statistics.")
    folded = copy.deepcopy(model)
    for module in folded.modules():
        for conv_name, bn_name in FOLDED_PAIRS.get(type(module), ()):
            _fold_attr(module, conv_name, bn_name)
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2 \
                and isinstance(downsample[0], nn.Conv2d) and isinstance(downsample[1], nn.BatchNorm2d):
            downsample[0] = fold_conv_bn(downsample[0], downsample[1])
            downsample[1] = nn.Identity()
    # The stem and the head live on the model itself.
    _fold_attr(folded, "conv1", "bn1")
    if isinstance(getattr(folded, "fc5", None), nn.Linear):
        if isinstance(getattr(folded, "bn4", None), nn.BatchNorm2d):
            folded.fc5 = fold_bn_linear(folded.bn4, folded.fc5)  # dropout between them is the identity in eval
            folded.bn4 = nn.Identity()
        if isinstance(getattr(folded, "bn5", None), nn.BatchNorm1d):
            folded.fc5 = fold_linear_bn(folded.fc5, folded.bn5)
            folded.bn5 = nn.Identity()
    return folded.eval()


def _fold_attr(module: nn.Module, conv_name: str, bn_name: str) -> None:
    """Replace ``module.<conv_name>`` by its fold with ``module.<bn_name>``, and the BN by Identity."""
    conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        setattr(module, conv_name, fold_conv_bn(conv, bn))
        setattr(module, bn_name, nn.Identity())
