"""The network, in build order: :func:`conv3x3` -> :class:`BasicBlock`, :class:`Bottleneck` -> :class:`SEBlock`
-> :class:`IRBlock` -> :class:`ResNetArcFace`. A drop-in for GFPGAN's ``arcface_arch.py`` (same names, keys,
shapes, arithmetic and initialisation). Needs only torch."""
from .blocks import BasicBlock, Bottleneck, IRBlock
from .conv import conv3x3
from .model import BLOCKS, INPUT_SIZE, ResNetArcFace, resnet_arcface18, resnet_arcface_small, validate_input
from .se import SEBlock

__all__ = ["conv3x3", "BasicBlock", "Bottleneck", "SEBlock", "IRBlock", "ResNetArcFace", "resnet_arcface18",
           "resnet_arcface_small", "validate_input", "BLOCKS", "INPUT_SIZE"]
