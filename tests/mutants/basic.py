"""Chapter 2 mutants: ``BasicBlock`` with one mistake each."""
import torch
from torch import nn

from resnet_arcface.nn.blocks import BasicBlock
from resnet_arcface.nn.conv import conv3x3

from . import mutant


@mutant("basic_block", "no activation after the addition")
class BasicNoFinalReLU(BasicBlock):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity  # the final ReLU is missing


@mutant("basic_block", "no residual")
class BasicNoResidual(BasicBlock):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))  # the identity is never added


@mutant("basic_block", "the activation comes before the addition")
class BasicReLUBeforeAddition(BasicBlock):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


@mutant("basic_block", "the stride is on conv2 but the reference puts it on conv1")
class BasicStrideOnConv2(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = conv3x3(inplanes, planes)
        self.conv2 = conv3x3(planes, planes, stride)


@mutant("basic_block", "missing downsample", "self.downsample")
class BasicIgnoresDownsample(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, None)  # the given downsample is dropped


@mutant("basic_block", "missing downsample", "never applied")
class BasicDownsampleNeverApplied(BasicBlock):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)  # stored, but the shortcut is always x


@mutant("basic_block", "has a bias; the reference uses bias=False")
class BasicConvBias(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1)


@mutant("basic_block", "not implemented yet")
class BasicStudentStub(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        raise NotImplementedError


@mutant("basic_block", "has no class attribute expansion")
class BasicNoExpansion(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.inner = BasicBlock(inplanes, planes, stride, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)
