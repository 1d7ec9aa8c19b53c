"""Weights and the model registry: ``create_model``/``list_models``, checkpoints that load strictly, and the
weights that ship inside the package."""
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_state_dict
from .registry import create_model, list_models
from .shipped import metrics, pretrained

__all__ = ["create_model", "list_models", "load_checkpoint", "read_state_dict", "CheckpointMismatchError",
           "pretrained", "metrics"]
