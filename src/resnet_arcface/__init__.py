"""ResNetArcFace, built step by step: the face-embedding network GFPGAN uses for its identity loss.

The package is the reference every chapter of the book shows and every self-check compares against. Its
sub-packages draw its architecture: :mod:`.nn` (the network), :mod:`.data`, :mod:`.learn` (losses and
training), :mod:`.eval` (verification), :mod:`.models` (weights), :mod:`.deploy` (fast inference),
:mod:`.teach` (the book's tools) and :mod:`.cli` (the commands). The names below are the public API.
"""
from .data import astronaut_face, lfw_faces, preprocess, synthetic_faces, to_gray
from .data.transforms import PretrainedCfg, create_transform, resolve_cfg, transform_for
from .device import model_device, pick_device
from .eval import embed, evaluate, evaluate_embeddings, pair_scores, pixel_baseline, roc, tar_at_far
from .learn import MarginHead, TrainConfig, arcface_logits, cosface_logits, cosine_logits, fit, identity_loss
from .models import CheckpointMismatchError, create_model, list_models, load_checkpoint, pretrained, read_state_dict
from .nn import (BLOCKS, BasicBlock, Bottleneck, IRBlock, ResNetArcFace, SEBlock, conv3x3, resnet_arcface18,
                 resnet_arcface_small, validate_input)

__all__ = [
    "conv3x3", "BasicBlock", "Bottleneck", "IRBlock", "SEBlock", "ResNetArcFace", "resnet_arcface18", "BLOCKS",
    "resnet_arcface_small", "validate_input", "synthetic_faces", "pretrained", "preprocess", "to_gray",
    "astronaut_face", "lfw_faces", "load_checkpoint", "read_state_dict", "CheckpointMismatchError", "pick_device",
    "MarginHead", "arcface_logits", "cosface_logits", "cosine_logits", "identity_loss", "fit", "TrainConfig",
    "embed", "evaluate", "evaluate_embeddings", "pair_scores", "roc", "tar_at_far", "pixel_baseline",
    "create_model", "list_models", "PretrainedCfg", "create_transform", "transform_for", "resolve_cfg", "model_device",
]
__version__ = "0.1.0"
