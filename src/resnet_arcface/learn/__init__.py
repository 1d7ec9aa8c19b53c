"""Learning an embedding: margin losses (softmax, CosFace, ArcFace) and :func:`fit`."""
from .losses import LOSSES, MarginHead, arcface_logits, cosface_logits, cosine_logits, identity_loss
from .training import OPTIMIZERS, fit

__all__ = ["MarginHead", "arcface_logits", "cosface_logits", "cosine_logits", "identity_loss", "LOSSES", "fit",
           "OPTIMIZERS"]
