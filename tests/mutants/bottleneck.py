"""Chapter 3 mutants: ``Bottleneck`` with one mistake each."""
from torch import nn

from resnet_arcface.nn.blocks import Bottleneck

from . import mutant


@mutant("bottleneck", "expansion is 1 but the reference Bottleneck has expansion = 4")
class BottleneckExpansion1(Bottleneck):
    expansion = 1  # conv3 and bn3 then keep planes channels


@mutant("bottleneck", "conv3 maps 16 -> 16 channels but the reference's maps 16 -> 64")
class BottleneckConv3NotExpanded(Bottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv3 = nn.Conv2d(planes, planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)


@mutant("bottleneck", "the stride is on conv1 but the reference puts it on conv2")
class BottleneckStrideOnConv1(Bottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)  # the original ResNet v1
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)


@mutant("bottleneck", "no activation after the addition")
class BottleneckNoFinalReLU(Bottleneck):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


@mutant("bottleneck", "no residual")
class BottleneckNoResidual(Bottleneck):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))


@mutant("bottleneck", "no ReLU after bn2")
class BottleneckNoMiddleReLU(Bottleneck):
    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)
