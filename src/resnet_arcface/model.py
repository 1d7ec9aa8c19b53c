"""ResNetArcFace: the 512-d face-embedding network GFPGAN uses for its identity loss."""
import inspect
from pathlib import Path
from typing import Sequence, Type, Union

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, IRBlock

BlockType = Type[Union[BasicBlock, Bottleneck, IRBlock]]

#: Block names accepted by :class:`ResNetArcFace` (the reference maps only ``'IRBlock'``).
BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck, "IRBlock": IRBlock}

#: The one input shape the network accepts: a batch of grayscale 128x128 faces.
INPUT_CHANNELS, INPUT_SIZE = 1, 128
EMBEDDING_DIM = 512


def resolve_block(block: Union[str, BlockType]) -> BlockType:
    """Turn a block name or class into the class, with a clear error otherwise."""
    if isinstance(block, str):
        if block not in BLOCKS:
            raise ValueError(f"Unknown block {block!r}; expected one of {sorted(BLOCKS)} or one of those classes.")
        return BLOCKS[block]
    if isinstance(block, type) and issubclass(block, nn.Module) and hasattr(block, "expansion"):
        return block
    raise ValueError(
        f"block must be one of {sorted(BLOCKS)} or an nn.Module class with an `expansion` attribute, got {block!r}."
    )


def check_input(x: object, training: bool = False) -> None:
    """Raise a ``ValueError`` that says how to fix an input the network cannot take.

    The network needs a float tensor of shape ``(N, 1, 128, 128)``: ``fc5`` is
    sized for the 8x8 map that a 128x128 input leaves after the stem's max-pool
    and three stride-2 stages, and ``conv1`` takes one (grayscale) channel.
    """
    fix = ("Use resnet_arcface.preprocess(images) to turn RGB or grayscale images in [0, 1] into this input "
           "(gray, 128x128, values in [-1, 1], as GFPGAN feeds it).")
    expected = f"a float tensor of shape (N, {INPUT_CHANNELS}, {INPUT_SIZE}, {INPUT_SIZE})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"ResNetArcFace expects {expected}, got {type(x).__name__}. {fix}")
    if not x.is_floating_point():
        raise ValueError(f"ResNetArcFace expects {expected}, got dtype {x.dtype}. "
                         f"Convert to float in [0, 1] (e.g. x.float() / 255). {fix}")
    if x.dim() != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"ResNetArcFace expects {expected}, got a {x.dim()}-D tensor of shape "
                         f"{tuple(x.shape)}.{hint} {fix}")
    n, c, h, w = x.shape
    if c != INPUT_CHANNELS:
        raise ValueError(f"ResNetArcFace expects {expected}, got {c} channels in shape {tuple(x.shape)} "
                         f"(an RGB image?). GFPGAN converts to gray with 0.2989 R + 0.5870 G + 0.1140 B. {fix}")
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"ResNetArcFace expects {expected}, got spatial size {h}x{w} in shape {tuple(x.shape)} "
                         f"(112x112 is InsightFace's convention, not this network's). Resize with bilinear "
                         f"interpolation to 128x128. {fix}")
    if training and n == 1:
        raise ValueError("ResNetArcFace in train mode needs a batch of at least 2: its final BatchNorm1d (bn5) "
                         "cannot estimate batch statistics from one sample. Call model.eval() for inference "
                         "(as GFPGAN does), or train on batches of 2 or more.")


class ResNetArcFace(nn.Module):
    """ResNet face-embedding network of ArcFace, as used by GFPGAN [Deng et al. 2019; Wang et al. 2021].

    Stem (conv-BN-PReLU-maxpool), four stages of residual blocks at 64, 128, 256
    and 512 channels (the last three with stride 2), then a head of
    BN2d-Dropout-flatten-Linear-BN1d giving a 512-d embedding.

    Differences from the reference, none of which changes an ``IRBlock`` network's keys:
    ``block`` accepts all three block names or classes; ``use_se`` is passed only
    to blocks that take it; the stage width follows ``block.expansion``; and bad
    arguments or inputs raise ``ValueError`` with a fix.

    Args:
        block: ``'IRBlock'``, ``'BasicBlock'``, ``'Bottleneck'`` or one of those classes.
        layers: Number of blocks in each of the four stages, e.g. ``(2, 2, 2, 2)``.
        use_se: Whether IRBlocks carry an SE gate. Default: True (GFPGAN uses False).

    Shape:
        - Input: ``(N, 1, 128, 128)``, float gray faces in [-1, 1] (see :func:`resnet_arcface.preprocess`).
        - Output: ``(N, 512)``, the embedding. ``N >= 2`` in train mode.
    """

    def __init__(self, block: Union[str, BlockType] = "IRBlock", layers: Sequence[int] = (2, 2, 2, 2),
                 use_se: bool = True) -> None:
        block = resolve_block(block)
        layers = tuple(layers)
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be four positive ints (blocks per stage), e.g. (2, 2, 2, 2); got {layers!r}.")
        super().__init__()
        self.block, self.layers = block, layers
        self.inplanes = 64
        self.use_se = use_se

        # Stem: (N, 1, 128, 128) -> (N, 64, 64, 64)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        # Stages: 64x64 -> 64x64 -> 32x32 -> 16x16 -> 8x8
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        # Head: (N, 512 * expansion, 8, 8) -> (N, 512)
        width = 512 * block.expansion  # the reference hard-codes 512, which only fits expansion 1
        self.bn4 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout()  # p = 0.5
        self.fc5 = nn.Linear(width * 8 * 8, EMBEDDING_DIM)
        self.bn5 = nn.BatchNorm1d(EMBEDDING_DIM)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-normal convs and linears [Glorot & Bengio 2010],
        zero linear biases, BatchNorm to identity; PReLU slopes keep their default 0.25."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: BlockType, planes: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
        """One stage: ``num_blocks`` blocks, the first of which may change width and stride."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # The reference passes use_se to every block, which BasicBlock and Bottleneck reject.
        extra = {"use_se": self.use_se} if "use_se" in inspect.signature(block).parameters else {}
        layers = [block(self.inplanes, planes, stride, downsample, **extra)]
        self.inplanes = planes * block.expansion  # the reference's `= planes` breaks Bottleneck
        for _ in range(1, num_blocks):
            layers.append(block(self.inplanes, planes, **extra))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.training)
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))  # (N, 64, 64, 64)
        x = self.layer1(x)  # (N, 64e, 64, 64)
        x = self.layer2(x)  # (N, 128e, 32, 32)
        x = self.layer3(x)  # (N, 256e, 16, 16)
        x = self.layer4(x)  # (N, 512e, 8, 8)
        x = self.dropout(self.bn4(x))
        x = x.view(x.size(0), -1)  # (N, 512e * 64)
        return self.bn5(self.fc5(x))  # (N, 512)

    def extra_repr(self) -> str:
        return (f"block={self.block.__name__}, layers={self.layers}, use_se={self.use_se}; "
                f"input (N, 1, 128, 128) float in [-1, 1], output (N, 512)")


def resnet_arcface18(weights: Union[str, Path, None] = None, map_location: Union[str, torch.device] = "cpu") -> ResNetArcFace:
    """GFPGAN's identity network: ``ResNetArcFace('IRBlock', (2, 2, 2, 2), use_se=False)``.

    Args:
        weights: Optional path to a local checkpoint such as GFPGAN's
            ``arcface_resnet18.pth``, loaded safely with ``strict=True``
            (see :func:`resnet_arcface.load_checkpoint`). Nothing is downloaded.
        map_location: Where to load the weights' tensors.

    Returns:
        The network, in eval mode when weights were loaded (as GFPGAN uses it), else in train mode.
    """
    model = ResNetArcFace(block="IRBlock", layers=(2, 2, 2, 2), use_se=False)
    if weights is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, weights, map_location=map_location)
        model.eval()
    return model
