"""Chapter 6 mutants: ``ResNetArcFace`` with one mistake each."""
import torch
from torch import nn

from resnet_arcface.nn.model import ResNetArcFace

from . import mutant


class _ModelBase(ResNetArcFace):
    """ResNetArcFace with its stem, stages and head as methods, so each mutant changes one of them."""

    def stem(self, x):
        return self.maxpool(self.prelu(self.bn1(self.conv1(x))))

    def stages(self, x):
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def head(self, x):
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


class _DownsampleBase(ResNetArcFace):
    """``_make_layer`` spelled out with a replaceable ``make_downsample``."""

    def make_downsample(self, inplanes, outplanes, stride):
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))

    def _make_layer(self, block, planes, num_blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = self.make_downsample(self.inplanes, planes, stride)
        layers = [block(self.inplanes, planes, stride, downsample, use_se=self.use_se)]
        self.inplanes = planes
        layers += [block(planes, planes, use_se=self.use_se) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)


@mutant("resnet_arcface", "wrong downsample", "no BatchNorm2d")
class ModelDownsampleWithoutBN(_DownsampleBase):
    def make_downsample(self, inplanes, outplanes, stride):
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False))


@mutant("resnet_arcface", "wrong downsample", "stride is 1 but should be 2")
class ModelDownsampleWrongStride(_DownsampleBase):
    def make_downsample(self, inplanes, outplanes, stride):
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, bias=False), nn.BatchNorm2d(outplanes))


@mutant("resnet_arcface", "missing downsample", "stride != 1")
class ModelNoDownsample(_DownsampleBase):
    def make_downsample(self, inplanes, outplanes, stride):
        return None


@mutant("resnet_arcface", "fc5 expects 25088 inputs, reference 512*8*8 = 32768")
class ModelFc5For112(_ModelBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)
        self.fc5 = nn.Linear(512 * 7 * 7, 512)


@mutant("resnet_arcface", "dropout missing", "train-mode")
class ModelNoDropout(_ModelBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)
        del self.dropout

    def head(self, x):
        return self.bn5(self.fc5(self.bn4(x).flatten(1)))


@mutant("resnet_arcface", "dropout in the wrong place", "before bn4")
class ModelDropoutBeforeBN4(_ModelBase):
    def head(self, x):
        return self.bn5(self.fc5(self.bn4(self.dropout(x)).flatten(1)))


@mutant("resnet_arcface", "dropout: p is 0.2 but should be 0.5", "after bn4")
class ModelDropoutP(_ModelBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)
        self.dropout = nn.Dropout(0.2)


@mutant("resnet_arcface", "bn5 missing", "BatchNorm1d(512)")
class ModelNoBN5(_ModelBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)
        del self.bn5

    def head(self, x):
        return self.fc5(self.dropout(self.bn4(x)).flatten(1))


@mutant("resnet_arcface", "bn4 is defined but never called")
class ModelBN4NeverCalled(_ModelBase):
    def head(self, x):
        return self.bn5(self.fc5(self.dropout(x).flatten(1)))


@mutant("resnet_arcface", "ReLU where the reference uses PReLU", "prelu.weight")
class ModelStemReLU(_ModelBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)
        del self.prelu
        self.relu = nn.ReLU()

    def stem(self, x):
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


@mutant("resnet_arcface", "no PReLU in the stem")
class ModelStemWithoutActivation(_ModelBase):
    def stem(self, x):
        return self.maxpool(self.bn1(self.conv1(x)))


@mutant("resnet_arcface", "initialisation differs", "kaiming_uniform_", "init loop")
class ModelDefaultInit(ResNetArcFace):
    def reset_parameters(self):
        pass  # PyTorch's defaults stay: kaiming-uniform weights, uniform biases


@mutant("resnet_arcface", "initialisation differs", "xavier_uniform_ instead of xavier_normal_")
class ModelXavierUniform(ResNetArcFace):
    def reset_parameters(self):
        super().reset_parameters()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)


@mutant("resnet_arcface", "use_se=False but", "has an SE gate")
class ModelIgnoresUseSE(_DownsampleBase):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__(block, layers, use_se)

    def _make_layer(self, block, planes, num_blocks, stride=1):
        use_se, self.use_se = self.use_se, True  # the blocks' default is used, whatever the argument
        try:
            return super()._make_layer(block, planes, num_blocks, stride)
        finally:
            self.use_se = use_se


@mutant("resnet_arcface", "not implemented yet")
class ModelStudentStub(nn.Module):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se=True):
        super().__init__()
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
