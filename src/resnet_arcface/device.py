"""Pick the compute device once, the same way in every chapter and test."""
import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """``cuda`` if available, then Apple's ``mps``, else ``cpu``.

    Args:
        prefer: ``"auto"`` (the order above), or ``"cpu"``, ``"cuda"``, ``"mps"`` to force one;
            forcing an unavailable device raises ``ValueError``. The environment variable
            ``RESNET_ARCFACE_DEVICE`` overrides ``"auto"`` (e.g. to test CPU on a GPU machine).
    """
    import os

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
