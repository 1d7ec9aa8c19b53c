"""Chapter 5 mutants: ``IRBlock`` with one mistake each."""
from torch import nn

from resnet_arcface.nn.blocks import IRBlock
from resnet_arcface.nn.conv import conv3x3
from resnet_arcface.nn.se import SEBlock

from . import mutant


class _IRBase(IRBlock):
    """IRBlock with its forward spelled out, so that each mutant changes one line of it."""

    def branch(self, x):
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        return self.bn2(self.conv2(out))

    def identity(self, x):
        return self.downsample(x) if self.downsample is not None else x


@mutant("ir_block", "conv1, conv2 have a bias; the reference uses bias=False because BatchNorm follows")
class IRConvBias(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        self.conv1 = nn.Conv2d(inplanes, inplanes, 3, 1, 1)
        self.conv2 = nn.Conv2d(inplanes, planes, 3, stride, 1)


@mutant("ir_block", "the stride is on conv1 but the reference puts it on conv2")
class IRStrideOnConv1(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        self.conv1 = conv3x3(inplanes, inplanes, stride)  # output shapes still match the reference's
        self.conv2 = conv3x3(inplanes, planes)


@mutant("ir_block", "conv1 maps 32 -> 64 channels but the reference's maps 32 -> 32")
class IRConv1ChangesWidth(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        self.conv1 = conv3x3(inplanes, planes)  # as in BasicBlock
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)


@mutant("ir_block", "ReLU where the reference uses PReLU")
class IRReLU(_IRBase):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        del self.prelu
        self.relu = nn.ReLU()
        self.prelu = self.relu.forward  # a plain function, so forward below still runs

    def forward(self, x):
        out = self.branch(x)
        out = self.se(out) if self.use_se else out
        return self.relu(out + self.identity(x))


@mutant("ir_block", "two PReLU modules (prelu, prelu2) but the reference shares ONE prelu")
class IRTwoPReLUs(_IRBase):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        self.prelu2 = nn.PReLU()

    def forward(self, x):
        out = self.branch(x)
        out = self.se(out) if self.use_se else out
        return self.prelu2(out + self.identity(x))


@mutant("ir_block", "SE applied after the residual addition", "before out += identity")
class IRSEAfterAddition(_IRBase):
    def forward(self, x):
        out = self.branch(x) + self.identity(x)
        out = self.se(out) if self.use_se else out
        return self.prelu(out)


@mutant("ir_block", "batch norm in the wrong place", "bn1 applied after prelu")
class IRPReLUBeforeBN1(_IRBase):
    def branch(self, x):
        out = self.bn1(self.prelu(self.conv1(self.bn0(x))))
        return self.bn2(self.conv2(out))

    def forward(self, x):
        out = self.branch(x)
        out = self.se(out) if self.use_se else out
        return self.prelu(out + self.identity(x))


@mutant("ir_block", "batch norm in the wrong place", "bn2 applied after se")
class IRBN2AfterSE(_IRBase):
    def forward(self, x):
        out = self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x)))))
        out = self.bn2(self.se(out) if self.use_se else out)
        return self.prelu(out + self.identity(x))


@mutant("ir_block", "bn0 missing", "normalises the block's input before conv1")
class IRNoBN0(_IRBase):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        del self.bn0

    def forward(self, x):
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        out = self.se(out) if self.use_se else out
        return self.prelu(out + self.identity(x))


@mutant("ir_block", "bn0 not applied")
class IRBN0NeverCalled(_IRBase):
    def forward(self, x):
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        out = self.se(out) if self.use_se else out
        return self.prelu(out + self.identity(x))


@mutant("ir_block", "no activation after the addition", "prelu is called 1 time(s)")
class IRNoActivationAfterAddition(_IRBase):
    def forward(self, x):
        out = self.branch(x)
        out = self.se(out) if self.use_se else out
        return out + self.identity(x)


@mutant("ir_block", "no residual")
class IRNoResidual(_IRBase):
    def forward(self, x):
        out = self.branch(x)
        return self.prelu(self.se(out) if self.use_se else out)


@mutant("ir_block", "missing downsample", "self.downsample")
class IRIgnoresDownsample(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, None, use_se)


@mutant("ir_block", "use_se=False but", "has an SE gate")
class IRAlwaysSE(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__(inplanes, planes, stride, downsample, use_se)
        self.se = SEBlock(planes)  # built even when use_se is False (and never used then)


@mutant("ir_block", "use_se=True but", "no SE gate")
class IRDefaultNoSE(IRBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=False):  # wrong default
        super().__init__(inplanes, planes, stride, downsample, use_se)


@mutant("ir_block", "not implemented yet", "raise NotImplementedError")
class IRForwardStub(IRBlock):
    def forward(self, x):
        raise NotImplementedError
