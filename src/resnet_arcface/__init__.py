"""ResNetArcFace, built step by step: the face-embedding network GFPGAN uses for its identity loss.

The package is the reference every chapter of the book shows and every self-check compares against.
"""
from .blocks import BasicBlock, Bottleneck, IRBlock
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_state_dict
from .conv import conv3x3
from .data import astronaut_face, lfw_faces, preprocess, to_gray
from .device import pick_device
from .faces import synthetic_faces
from .losses import MarginHead, arcface_logits, cosface_logits, cosine_logits, identity_loss
from .model import BLOCKS, ResNetArcFace, resnet_arcface18, resnet_arcface_small, validate_input
from .pretrained import pretrained  # the function; the module stays in sys.modules
from .se import SEBlock
from .train import fit
from .verify import embed, evaluate, evaluate_embeddings, pair_scores, roc, tar_at_far

__all__ = [
    "conv3x3", "BasicBlock", "Bottleneck", "IRBlock", "SEBlock", "ResNetArcFace", "resnet_arcface18", "BLOCKS",
    "resnet_arcface_small", "validate_input", "synthetic_faces", "pretrained", "preprocess", "to_gray",
    "astronaut_face", "lfw_faces", "load_checkpoint", "read_state_dict", "CheckpointMismatchError", "pick_device",
    "MarginHead", "arcface_logits", "cosface_logits", "cosine_logits", "identity_loss", "fit",
    "embed", "evaluate", "evaluate_embeddings", "pair_scores", "roc", "tar_at_far",
]
__version__ = "0.1.0"
