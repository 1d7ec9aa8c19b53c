"""Chapter 4 mutants: ``SEBlock`` with one mistake each."""
from torch import nn

from resnet_arcface.nn.se import SEBlock

from . import mutant


def _mlp(channel: int, hidden: int, act: nn.Module, sigmoid: bool = True) -> nn.Sequential:
    layers = [nn.Linear(channel, hidden), act, nn.Linear(hidden, channel)]
    return nn.Sequential(*(layers + [nn.Sigmoid()] if sigmoid else layers))


@mutant("se_block", "SE bottleneck width is 8, expected channel // reduction = 64 // 16 = 4")
class SEWrongReduction(SEBlock):
    def __init__(self, channel, reduction=16):
        super().__init__(channel, reduction)
        self.fc = _mlp(channel, channel // 8, nn.PReLU())


@mutant("se_block", "SE bottleneck width is 2, expected channel // reduction = 32 // 8 = 4")
class SEIgnoresReduction(SEBlock):
    def __init__(self, channel, reduction=16):
        super().__init__(channel)  # the reduction argument is dropped


@mutant("se_block", "SE gate has no Sigmoid")
class SENoSigmoid(SEBlock):
    def __init__(self, channel, reduction=16):
        super().__init__(channel, reduction)
        self.fc = _mlp(channel, channel // reduction, nn.PReLU(), sigmoid=False)


@mutant("se_block", "ReLU where the reference uses PReLU")
class SEReLU(SEBlock):
    def __init__(self, channel, reduction=16):
        super().__init__(channel, reduction)
        self.fc = _mlp(channel, channel // reduction, nn.ReLU(inplace=True))  # as in Hu et al.'s SE


@mutant("se_block", "SE returns the gate instead of x * gate")
class SEReturnsGate(SEBlock):
    def forward(self, x):
        return self.gate(x)


@mutant("se_block", "avg_pool is AdaptiveMaxPool2d where the reference uses AdaptiveAvgPool2d")
class SEMaxPool(SEBlock):
    def __init__(self, channel, reduction=16):
        super().__init__(channel, reduction)
        self.avg_pool = nn.AdaptiveMaxPool2d(1)


@mutant("se_block", "the gate is added, not multiplied")
class SEAddsGate(SEBlock):
    def forward(self, x):
        return x + self.gate(x)
