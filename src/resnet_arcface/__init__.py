"""ResNetArcFace, built step by step: the face-embedding network GFPGAN uses for its identity loss.

The package is the reference every chapter of the book shows and every self-check compares against.
"""
from .blocks import BasicBlock, Bottleneck, IRBlock
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_state_dict
from .conv import conv3x3
from .data import astronaut_face, lfw_faces, preprocess, to_gray
from .device import pick_device
from .faces import synthetic_faces
from .model import BLOCKS, ResNetArcFace, resnet_arcface18, resnet_arcface_small, validate_input
from .se import SEBlock

__all__ = [
    "conv3x3", "BasicBlock", "Bottleneck", "IRBlock", "SEBlock", "ResNetArcFace", "resnet_arcface18", "BLOCKS",
    "resnet_arcface_small", "validate_input", "synthetic_faces", "preprocess", "to_gray", "astronaut_face",
    "lfw_faces", "load_checkpoint", "read_state_dict", "CheckpointMismatchError", "pick_device",
]
__version__ = "0.1.0"
