"""Weights: checkpoints that load strictly, and the weights that ship inside the package."""
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_state_dict
from .shipped import metrics, pretrained

__all__ = ["load_checkpoint", "read_state_dict", "CheckpointMismatchError", "pretrained", "metrics"]
