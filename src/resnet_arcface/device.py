"""Devices, looked up one way everywhere: which device to run on, and which device a model is on."""
import os
from typing import Union

import torch
from torch import nn

__all__ = ["pick_device", "resolve_device", "model_device"]


def pick_device(prefer: str = "auto") -> torch.device:
    """``cuda`` if available, then Apple's ``mps``, else ``cpu``.

    Args:
        prefer: ``"auto"`` (the order above), or ``"cpu"``, ``"cuda"``, ``"mps"`` to force one;
            forcing an unavailable device raises ``ValueError``. The environment variable
            ``RESNET_ARCFACE_DEVICE`` overrides ``"auto"`` (e.g. to test CPU on a GPU machine).
    """
    prefer = os.environ.get("RESNET_ARCFACE_DEVICE", prefer) if prefer == "auto" else prefer
    available = {"cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                 "cpu": True}
    if prefer == "auto":
        return torch.device(next(name for name in ("cuda", "mps", "cpu") if available[name]))
    if prefer not in available:
        raise ValueError(f"prefer must be 'auto', 'cuda', 'mps' or 'cpu', got {prefer!r}.")
    if not available[prefer]:
        raise ValueError(f"Device {prefer!r} is not available here; use pick_device() to choose automatically.")
    return torch.device(prefer)


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """Any way of naming a device -> a ``torch.device``.

    ``"auto"``, ``"cpu"``, ``"cuda"`` and ``"mps"`` go through :func:`pick_device` (which checks that the
    device exists here); an explicit index such as ``"cuda:1"``, or a ``torch.device``, is taken as given.
    """
    if isinstance(device, str) and device in ("auto", "cpu", "cuda", "mps"):
        return pick_device(device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'mps', a name such as 'cuda:1', or a "
                         f"torch.device; got {device!r}.") from None


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a module that holds no tensors."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
