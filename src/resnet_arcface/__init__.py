"""ResNetArcFace, built step by step: the face-embedding network GFPGAN uses for its identity loss.

The package is the reference every chapter of the book shows and every self-check compares against.
"""
from .blocks import BasicBlock, Bottleneck, IRBlock
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_state_dict
from .conv import conv3x3
from .data import astronaut_face, lfw_faces, preprocess, to_gray
from .device import pick_device
from .model import BLOCKS, ResNetArcFace, check_input, resnet_arcface18
from .se import SEBlock

__all__ = [
    "conv3x3", "BasicBlock", "Bottleneck", "IRBlock", "SEBlock", "ResNetArcFace", "resnet_arcface18", "BLOCKS",
    "check_input", "preprocess", "to_gray", "astronaut_face", "lfw_faces", "load_checkpoint", "read_state_dict",
    "CheckpointMismatchError", "pick_device",
]
__version__ = "0.1.0"
