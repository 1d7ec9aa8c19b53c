"""Learning an embedding: margin losses (softmax, CosFace, ArcFace) and :func:`fit`."""
from .losses import LOSSES, MarginHead, arcface_logits, cosface_logits, cosine_logits, identity_loss
from .config import OPTIMIZERS, TrainConfig
from .training import fit

__all__ = ["MarginHead", "arcface_logits", "cosface_logits", "cosine_logits", "identity_loss", "LOSSES", "fit",
           "OPTIMIZERS", "TrainConfig"]
