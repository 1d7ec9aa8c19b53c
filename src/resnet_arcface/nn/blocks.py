"""The residual blocks: BasicBlock and Bottleneck [He et al. 2016], and IRBlock.

Every attribute name below is a state_dict key of GFPGAN's ``arcface_arch.py``;
they are kept exactly so that its pretrained weights load with ``strict=True``.
"""
from typing import Optional

import torch
from torch import nn

from .conv import conv3x3
from .se import SEBlock


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34's block).

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + residual)`` where ``residual``
    is ``x``, or ``downsample(x)`` when the shape changes.

    Args:
        inplanes: Channel number of inputs.
        planes: Channel number of outputs.
        stride: Stride of ``conv1``. Default: 1.
        downsample: Module mapping the input to the output's shape, or None.

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, planes, H', W')`` with ``H' = (H - 1) // stride + 1``.
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride  # stored but unused, as in the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H', W')
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a residual connection.

    Args:
        inplanes: Channel number of inputs.
        planes: Channel number inside the block; the output has ``planes * 4``.
        stride: Stride of the 3x3 ``conv2``. Default: 1.
        downsample: Module mapping the input to the output's shape, or None.

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, planes * 4, H', W')`` with ``H' = (H - 1) // stride + 1``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride  # stored but unused, as in the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, H', W')
        out = self.bn3(self.conv3(out))  # (N, planes * 4, H', W')
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class IRBlock(nn.Module):
    """The residual block of GFPGAN's identity network, copied from ronghuaiyang/arcface-pytorch's ``resnet_face18``.

    It is named after InsightFace's "improved residual" unit [Deng et al. 2019] but is not that unit:
    InsightFace's is BN-Conv-BN-PReLU-Conv-BN with no activation after the addition and a per-channel
    PReLU (112-px RGB input); this one applies a single-slope PReLU again after the addition.

    Differences from :class:`BasicBlock`: a BatchNorm (``bn0``) *before* the
    first convolution (pre-activation style, [He et al. 2016b]); PReLU instead of
    ReLU [He et al. 2015]; ``conv1`` keeps ``inplanes`` channels and ``conv2``
    changes the width and carries the stride; an optional SE gate on the branch
    before the addition.

    ONE ``PReLU`` module is applied twice (inside the branch and after the
    addition), so both uses share a single learned slope: this is the reference's
    behaviour and its pretrained weights hold a single ``prelu.weight``.

    Args:
        inplanes: Channel number of inputs.
        planes: Channel number of outputs.
        stride: Stride of ``conv2``. Default: 1.
        downsample: Module mapping the input to the output's shape, or None.
        use_se: Whether to gate the branch with an :class:`SEBlock`. Default: True.

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, planes, H', W')`` with ``H' = (H - 1) // stride + 1``.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, use_se: bool = True) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride  # stored but unused, as in the reference
        self.use_se = use_se
        if self.use_se:
            self.se = SEBlock(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))  # (N, inplanes, H, W)
        out = self.bn2(self.conv2(out))  # (N, planes, H', W')
        if self.use_se:
            out = self.se(out)  # gate the branch, before the addition
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.prelu(out)  # the same module, so the same slope, as above
