"""Exact BatchNorm folding for inference [Jacob et al. 2018, section 3.2].

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = a * x + b`` with
``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a * running_mean``. When it *follows*
a convolution (or a Linear) the two compose into one convolution with weight ``a * W`` (per
output channel) and bias ``a * bias + b``: the same numbers up to float rounding, one pass
over memory fewer.

The trap: a BatchNorm *before* a zero-padded convolution (the ``bn0`` of every ``IRBlock``)
cannot fold into a *per-channel* bias. Folding its shift ``b`` into the convolution's bias would
add ``b``'s contribution at every output position, but the real network shifts the input *before*
the convolution pads it with zeros, so at the border the padded zeros stay zeros and never receive
``b``. That fold differs along the one-pixel frame of every map (cosine about 0.997 on a random
network). bn0 still folds exactly, in two parts (:func:`fold_bn_conv`):

- its scale ``a`` folds into the convolution's weights, per *input* channel: scaling commutes with
  zero padding (``a * 0 = 0``), so ``conv(pad(a * x)) = conv_aW(pad(x))`` everywhere;
- its shift ``b`` becomes a constant *bias map* ``conv(pad(b * 1))``, one value per output channel and
  position, smaller at the border. It is a constant because the input size is fixed (``fc5`` fixes it):
  the folded block is exact at that size only.

:func:`fold_batchnorm` folds every conv-then-BN pair, ``bn4`` and ``bn5`` into ``fc5``, and with
``bn0=True`` every ``bn0`` too (the ``fold`` backends of :func:`resnet_arcface.deploy.inference.optimize`
do). ``bn4`` before ``fc5`` folds into a per-feature bias: a Linear has no padding, so every input it
reads really was shifted.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import BasicBlock, Bottleneck, IRBlock

__all__ = ["bn_scale_shift", "fold_conv_bn", "fold_linear_bn", "fold_bn_linear", "fold_bn_conv", "fold_batchnorm",
           "ConvBiasMap", "FOLDED_PAIRS", "PRE_CONV_PAIRS"]

#: The (convolution, BatchNorm-after-it) attribute pairs of each block type: they fold into a per-channel bias.
#: ``bn0`` is absent: it comes *before* ``conv1``, which pads with zeros (see :data:`PRE_CONV_PAIRS`).
FOLDED_PAIRS: Dict[type, Tuple[Tuple[str, str], ...]] = {
    IRBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


#: The (BatchNorm, zero-padded convolution after it) pairs: they fold with a bias map (:func:`fold_bn_conv`).
PRE_CONV_PAIRS: Dict[type, Tuple[Tuple[str, str], ...]] = {IRBlock: (("bn0", "conv1"),)}


class ConvBiasMap(nn.Module):
    """A convolution plus a constant bias map: ``conv(x) + bias_map``, what a folded ``bn0`` leaves.

    ``bias_map`` varies over positions (it is smaller along the border, where the convolution read padded
    zeros), so it holds for one input size only; another size is refused, not silently wrong.

    Shape:
        - Input: ``(N, conv.in_channels, H, W)`` at the size the map was made for.
        - Output: ``(N, conv.out_channels, H', W')``; ``bias_map`` is ``(1, conv.out_channels, H', W')``.
    """

    def __init__(self, conv: nn.Conv2d, bias_map: torch.Tensor) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("bias_map", bias_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if out.shape[-2:] != self.bias_map.shape[-2:]:
            raise ValueError(f"This folded convolution's bias map is {tuple(self.bias_map.shape[-2:])}: it was folded "
                             f"for one input size (fc5 fixes it), but gets a {tuple(out.shape[-2:])} map.")
        return out + self.bias_map


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


def fold_bn_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d, input_hw: Tuple[int, int]) -> ConvBiasMap:
    """Fold an eval-mode BatchNorm that comes BEFORE a zero-padded convolution (``bn0`` before ``conv1``).

    ``conv(bn(x)) == folded(x)`` for every ``x`` of spatial size ``input_hw`` (up to float rounding): the
    scale multiplies the weights per *input* channel (exact, since ``scale * 0 = 0`` at the padding), and the
    shift becomes the bias map ``conv(pad(shift * ones))`` without the convolution's own bias (computed in
    float64, rounded once). Neither argument is modified.

    Args:
        bn: The BatchNorm applied to the convolution's input, with running statistics.
        conv: The convolution (zero padding, ``groups=1``; with or without a bias).
        input_hw: ``(H, W)`` of the convolution's input; the fold is exact at this size only.

    Returns:
        A :class:`ConvBiasMap` on the convolution's device and dtype.

    Shape:
        - Input: ``(N, conv.in_channels, H, W)`` with ``(H, W) == input_hw``
        - Output: ``(N, conv.out_channels, H', W')``, as ``conv(bn(x))``.
    """
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"fold_bn_conv expects (nn.BatchNorm2d, nn.Conv2d), got ({type(bn).__name__}, "
                         f"{type(conv).__name__}).")
    if bn.num_features != conv.in_channels or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"fold_bn_conv folds a BatchNorm into the zero-padded, ungrouped convolution that reads its "
                         f"output: BatchNorm channels {bn.num_features}, convolution in_channels {conv.in_channels}, "
                         f"groups {conv.groups}, padding_mode {conv.padding_mode!r}.")
    scale, shift = bn_scale_shift(bn)
    weight = conv.weight.detach().double()
    constant = shift.view(1, -1, 1, 1).expand(1, conv.in_channels, *input_hw)  # the shift everywhere, before padding
    bias_map = F.conv2d(constant, weight, None, conv.stride, conv.padding, conv.dilation)  # (1, C_out, H', W')
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                       device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight * scale.view(1, -1, 1, 1))  # scale each INPUT channel
        if conv.bias is not None:
            folded.bias.copy_(conv.bias.detach())
    return ConvBiasMap(folded, bias_map.to(conv.weight.dtype))


def fold_batchnorm(model: nn.Module, bn0: bool = False) -> nn.Module:
    """A copy of an eval-mode ResNetArcFace with every exactly-foldable BatchNorm folded away.

    Folds ``conv1``/``bn1`` of the stem, each block's conv-then-BN pairs (:data:`FOLDED_PAIRS`)
    and ``downsample``'s 1x1 conv and BN, then ``bn4`` and ``bn5`` into ``fc5``. A folded
    BatchNorm becomes ``nn.Identity()``, so attribute names and ``forward`` stay the same.
    With ``bn0=True`` every ``bn0`` folds too, into its ``conv1`` plus a bias map (:func:`fold_bn_conv`);
    the folded network then takes only the input size ``model.input_size`` (which ``fc5`` requires anyway).

    Args:
        model: A :class:`~resnet_arcface.ResNetArcFace` (any block type) in eval mode. It is not modified.
        bn0: Also fold the BatchNorms that precede a zero-padded convolution (default: leave them, the
            per-channel folds only).

    Returns:
        The folded copy, in eval mode. It is for inference only: its BatchNorms no longer exist to train.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first): folding uses the "
                         "running statistics, which is what eval mode computes; train mode uses batch statistics.")
    folded = copy.deepcopy(model)
    input_hw = _pre_conv_input_sizes(folded) if bn0 else {}
    for module in folded.modules():
        for conv_name, bn_name in FOLDED_PAIRS.get(type(module), ()):
            _fold_attr(module, conv_name, bn_name)
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2 \
                and isinstance(downsample[0], nn.Conv2d) and isinstance(downsample[1], nn.BatchNorm2d):
            downsample[0] = fold_conv_bn(downsample[0], downsample[1])
            downsample[1] = nn.Identity()
        for bn_name, conv_name in PRE_CONV_PAIRS.get(type(module), ()) if bn0 else ():
            bn, conv = getattr(module, bn_name), getattr(module, conv_name)
            if isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
                # conv is already folded with the BN after it: bn1(conv1(bn0(x))) = folded1(bn0(x)).
                setattr(module, conv_name, fold_bn_conv(bn, conv, input_hw[id(bn)]))
                setattr(module, bn_name, nn.Identity())
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


def _pre_conv_input_sizes(model: nn.Module) -> Dict[int, Tuple[int, int]]:
    """``id(bn) -> (H, W)`` of the input of every BatchNorm in :data:`PRE_CONV_PAIRS`, traced with one zero
    image of the model's input size (the only size the network takes)."""
    from ..data.transforms import resolve_cfg
    from ..device import model_device

    sizes: Dict[int, Tuple[int, int]] = {}
    hooks: List[torch.utils.hooks.RemovableHandle] = []
    for module in model.modules():
        for bn_name, _ in PRE_CONV_PAIRS.get(type(module), ()):
            bn = getattr(module, bn_name)
            hooks.append(bn.register_forward_pre_hook(
                lambda m, inputs: sizes.__setitem__(id(m), tuple(inputs[0].shape[-2:]))))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *resolve_cfg(model).shape, device=model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return sizes
