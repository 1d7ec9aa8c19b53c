"""ResNetArcFace: the 512-d face-embedding network GFPGAN uses for its identity loss."""
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, IRBlock

BlockType = Type[Union[BasicBlock, Bottleneck, IRBlock]]

#: Block names accepted by :class:`ResNetArcFace` (the reference maps only ``'IRBlock'``).
BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck, "IRBlock": IRBlock}

#: GFPGAN's input: a batch of grayscale 128x128 faces. Other sizes are a constructor argument.
INPUT_CHANNELS, INPUT_SIZE = 1, 128
EMBEDDING_DIM = 512
#: GFPGAN's stage widths (stem and stages 1-4).
WIDTHS = (64, 128, 256, 512)
#: The stem's max-pool and three stride-2 stages divide the side by 16 before ``fc5``.
DOWNSAMPLING = 16
#: ITU-R BT.601 luma weights, as GFPGAN's ``gray_resize_for_identity`` uses them (they sum to 0.9999, not 1).
LUMA = (0.2989, 0.5870, 0.1140)


@dataclass(frozen=True)
class PretrainedCfg:
    """What a network expects as input, in timm's manner: every model carries one as ``model.pretrained_cfg``.

    :func:`resnet_arcface.data.transforms.create_transform` turns it into the one function that maps images as
    a data set holds them (float in [0, 1], gray or RGB, any size) to the network's input. The defaults are
    GFPGAN's steps: normalise with mean 0.5 and std 0.5 (so [0, 1] becomes [-1, 1]), convert RGB to luma,
    resize bilinearly (``align_corners=False``) to ``input_size``.

    Attributes:
        input_size: Side of the square input, in pixels (128 for GFPGAN, 32 for the small network).
        channels: Channels of the network input: 1, gray.
        value_range: Range of the network input's values (what the transform produces from [0, 1] images).
        mean: Subtracted from every channel of a [0, 1] image, before the luma conversion (GFPGAN's order).
        std: Divides every channel after ``mean`` is subtracted.
        interpolation: ``torch.nn.functional.interpolate`` mode of the resize (always ``align_corners=False``).
        luma: Weights of R, G and B in the gray conversion.
    """

    input_size: int = INPUT_SIZE
    channels: int = INPUT_CHANNELS
    value_range: Tuple[float, float] = (-1.0, 1.0)
    mean: float = 0.5
    std: float = 0.5
    interpolation: str = "bilinear"
    luma: Tuple[float, float, float] = LUMA

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(channels, input_size, input_size)``: one network input without its batch dimension."""
        return (self.channels, self.input_size, self.input_size)


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


def validate_input(x: object, training: bool = False, input_size: int = INPUT_SIZE) -> None:
    """Raise a ``ValueError`` that says how to fix an input the network cannot take.

    The network needs a float tensor of shape ``(N, 1, input_size, input_size)``:
    ``fc5`` is sized for the ``input_size / 16`` map that the stem's max-pool and
    three stride-2 stages leave (8x8 for GFPGAN's 128), and ``conv1`` takes one
    (grayscale) channel.

    Args:
        x: The would-be input.
        training: Whether the network is in train mode (then ``N >= 2``, for ``bn5``).
        input_size: The side the network was built for (``model.input_size``).

    Shape:
        - Input: ``(N, 1, input_size, input_size)``, float.
    """
    s = input_size
    call = "preprocess(images)" if s == INPUT_SIZE else f"preprocess(images, size={s})"
    fix = (f"Use resnet_arcface.{call} to turn RGB or grayscale images in [0, 1] into this input "
           f"(gray, {s}x{s}, values in [-1, 1], as GFPGAN feeds it).")
    expected = f"a float tensor of shape (N, {INPUT_CHANNELS}, {s}, {s})"
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
    if (h, w) != (s, s):
        insight = " (112x112 is InsightFace's convention, not this network's)" if (h, w) == (112, 112) else ""
        raise ValueError(f"ResNetArcFace expects {expected}, got spatial size {h}x{w} in shape {tuple(x.shape)}"
                         f"{insight}. Resize with bilinear interpolation to {s}x{s}. {fix}")
    if training and n == 1:
        raise ValueError("ResNetArcFace in train mode needs a batch of at least 2: its final BatchNorm1d (bn5) "
                         "cannot estimate batch statistics from one sample. Call model.eval() for inference "
                         "(as GFPGAN does), or train on batches of 2 or more.")


def _validate_config(widths: Tuple[int, ...], input_size: object, embedding_dim: object) -> None:
    """Check the size arguments of :class:`ResNetArcFace`, naming the bad value and a fix."""
    def positive_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if len(widths) != 4 or not all(positive_int(w) for w in widths):
        raise ValueError(f"widths must be four positive ints (stem/stage-1, stage-2, stage-3, stage-4 channels), "
                         f"e.g. (64, 128, 256, 512) or (16, 32, 64, 128); got {widths!r}.")
    if not positive_int(input_size) or input_size % DOWNSAMPLING != 0:  # type: ignore[operator]
        raise ValueError(f"input_size must be a positive multiple of {DOWNSAMPLING} (the stem's max-pool and three "
                         f"stride-2 stages halve it four times), e.g. 32, 64 or 128; got {input_size!r}.")
    if not positive_int(embedding_dim):
        raise ValueError(f"embedding_dim must be a positive int, e.g. 512 (GFPGAN) or 128; got {embedding_dim!r}.")


class ResNetArcFace(nn.Module):
    """The face-embedding network GFPGAN uses [Wang et al. 2021]: arcface-pytorch's ``resnet_face18``.

    Trained with the ArcFace loss [Deng et al. 2019] in the original; see :mod:`resnet_arcface.learn.losses`.

    Stem (conv-BN-PReLU-maxpool), four stages of residual blocks at 64, 128, 256
    and 512 channels (the last three with stride 2), then a head of
    BN2d-Dropout-flatten-Linear-BN1d giving a 512-d embedding. ``widths``,
    ``input_size`` and ``embedding_dim`` make narrower, smaller networks of the
    same design (see :func:`resnet_arcface_small`); the defaults are GFPGAN's.

    Differences from the reference, none of which changes an ``IRBlock`` network's keys:
    ``block`` accepts all three block names or classes; ``use_se`` is passed only
    to blocks that take it; the stage width follows ``block.expansion``; and bad
    arguments or inputs raise ``ValueError`` with a fix.

    Args:
        block: ``'IRBlock'``, ``'BasicBlock'``, ``'Bottleneck'`` or one of those classes.
        layers: Number of blocks in each of the four stages, e.g. ``(2, 2, 2, 2)``.
        use_se: Whether IRBlocks carry an SE gate. Default: True (GFPGAN uses False).
        widths: Channels of the stem/stage 1 and of stages 2-4 (times ``block.expansion``
            after the stem). Default: GFPGAN's ``(64, 128, 256, 512)``.
        input_size: Side of the square input; a multiple of 16. Default: 128.
        embedding_dim: Length of the embedding. Default: 512.

    Shape:
        - Input: ``(N, 1, input_size, input_size)``, float gray faces in [-1, 1]
          (see :func:`resnet_arcface.preprocess` with ``size=input_size``).
        - Output: ``(N, embedding_dim)``, the embedding. ``N >= 2`` in train mode.
    """

    def __init__(self, block: Union[str, BlockType] = "IRBlock", layers: Sequence[int] = (2, 2, 2, 2),
                 use_se: bool = True, widths: Sequence[int] = WIDTHS, input_size: int = INPUT_SIZE,
                 embedding_dim: int = EMBEDDING_DIM) -> None:
        block = resolve_block(block)
        layers, widths = tuple(layers), tuple(widths)
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be four positive ints (blocks per stage), e.g. (2, 2, 2, 2); got {layers!r}.")
        _validate_config(widths, input_size, embedding_dim)
        super().__init__()
        self.block, self.layers = block, layers
        self.widths, self.input_size, self.embedding_dim = widths, input_size, embedding_dim
        self.inplanes = widths[0]
        self.use_se = use_se
        #: What the network takes as input; see :class:`PretrainedCfg` (not part of the state_dict).
        self.pretrained_cfg = PretrainedCfg(input_size=input_size)

        # Stem: (N, 1, S, S) -> (N, w0, S/2, S/2); S = 128, w0 = 64 for GFPGAN
        self.conv1 = nn.Conv2d(1, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        # Stages: S/2 -> S/2 -> S/4 -> S/8 -> S/16 (GFPGAN: 64x64 -> 64 -> 32 -> 16 -> 8x8)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        # Head: (N, w3 * expansion, S/16, S/16) -> (N, embedding_dim)
        width = widths[3] * block.expansion  # the reference hard-codes 512, which only fits expansion 1
        side = input_size // DOWNSAMPLING
        self.bn4 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout()  # p = 0.5
        self.fc5 = nn.Linear(width * side * side, embedding_dim)
        self.bn5 = nn.BatchNorm1d(embedding_dim)
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
        validate_input(x, self.training, self.input_size)
        # Shapes for GFPGAN's configuration (S = 128, widths 64..512, e = block.expansion):
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))  # (N, 64, 64, 64)
        x = self.layer1(x)  # (N, 64e, 64, 64)
        x = self.layer2(x)  # (N, 128e, 32, 32)
        x = self.layer3(x)  # (N, 256e, 16, 16)
        x = self.layer4(x)  # (N, 512e, 8, 8)
        x = self.dropout(self.bn4(x))
        x = torch.flatten(x, 1)  # (N, 512e * 64) in C, H, W order; the reference's view() refuses channels_last
        return self.bn5(self.fc5(x))  # (N, 512)

    def extra_repr(self) -> str:
        s, widths = self.input_size, "" if self.widths == WIDTHS else f", widths={self.widths}"
        return (f"block={self.block.__name__}, layers={self.layers}, use_se={self.use_se}{widths}; "
                f"input (N, 1, {s}, {s}) float in [-1, 1], output (N, {self.embedding_dim})")


#: GFPGAN's configuration (``resnet_arcface18``): 25,627,081 parameters, 128x128 gray input, 512-d embedding.
GFPGAN_CONFIG: Dict[str, Any] = dict(block="IRBlock", layers=(2, 2, 2, 2), use_se=False, widths=WIDTHS,
                                     input_size=INPUT_SIZE, embedding_dim=EMBEDDING_DIM)


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
        from ..models.checkpoint import load_checkpoint

        load_checkpoint(model, weights, map_location=map_location)
        model.eval()
    return model


#: The small configuration: GFPGAN's design (IRBlocks, 2-2-2-2, shared PReLU, BN-Dropout-FC-BN head)
#: at a quarter of the width, on 32x32 faces, with a 128-d embedding (about 0.6 M parameters).
SMALL_CONFIG: Dict[str, Any] = dict(block="IRBlock", layers=(2, 2, 2, 2), use_se=False,
                                    widths=(16, 32, 64, 128), input_size=32, embedding_dim=128)


def resnet_arcface_small(**overrides: Any) -> ResNetArcFace:
    """A narrow, small-input ResNetArcFace that trains in minutes on a laptop CPU.

    The same blocks, stages and head as :func:`resnet_arcface18`, built from
    :data:`SMALL_CONFIG`; the package's shipped weights
    (:func:`resnet_arcface.pretrained`) are this network trained with ArcFace on
    synthetic faces.

    Args:
        **overrides: Any :class:`ResNetArcFace` argument, replacing the small default
            (e.g. ``input_size=64``).

    Returns:
        The network, freshly initialised, in train mode.

    Shape:
        - Input: ``(N, 1, 32, 32)`` by default (``preprocess(images, size=32)``).
        - Output: ``(N, 128)`` by default.
    """
    unknown = sorted(set(overrides) - set(SMALL_CONFIG))
    if unknown:
        raise ValueError(f"resnet_arcface_small got unknown argument(s) {unknown}; it accepts {sorted(SMALL_CONFIG)}.")
    return ResNetArcFace(**{**SMALL_CONFIG, **overrides})
