"""Safe loading of pretrained weights (never unpickles arbitrary objects)."""
from pathlib import Path
from typing import Dict, Mapping, Union

import torch
from torch import nn

#: Keys under which training frameworks nest a state_dict (BasicSR uses params / params_ema).
NESTED_KEYS = ("params_ema", "params", "state_dict", "model")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; the message lists every difference."""


def read_state_dict(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)``.

    Accepts a bare state_dict or one nested under ``params_ema``, ``params``,
    ``state_dict`` or ``model`` (the first present wins), and strips the
    ``module.`` prefix that ``nn.DataParallel`` adds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}. Give the path of a local .pth file "
                                f"(e.g. GFPGAN's arcface_resnet18.pth); nothing is downloaded.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle refusals and corrupt files both land here
        raise ValueError(f"Could not load {str(path)!r} safely with weights_only=True ({exc}). Only files that "
                         f"hold tensors (a state_dict) are accepted; re-save with torch.save(model.state_dict(), path).") from exc
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a mapping of names to tensors), nor one nested "
                         f"under {list(NESTED_KEYS)}; found {type(obj).__name__}.")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """Plain-words list of missing keys, unexpected keys and shape differences ('' when they match)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: model {tuple(own[k].shape)}, checkpoint {tuple(state_dict[k].shape)}"
              for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    lines = []
    for title, items in (("missing from the checkpoint", missing), ("in the checkpoint but not the model", unexpected),
                         ("with different shapes", shapes)):
        if items:
            lines.append(f"{len(items)} key(s) {title}:\n  " + "\n  ".join(items))
    return "\n".join(lines)


def load_checkpoint(model: nn.Module, path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load the weights at ``path`` into ``model`` with ``strict=True`` semantics, explaining any mismatch.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a plain state_dict (it is never unpickled as code).
        CheckpointMismatchError: keys or shapes differ; the message lists them.
    """
    state_dict = read_state_dict(path, map_location)
    problems = describe_mismatch(model, state_dict)
    if problems:
        hint = ""
        if any(k.startswith("se.") or ".se." in k for k in state_dict) != any(".se." in k for k in model.state_dict()):
            hint = "\nHint: SE keys differ; build the model with the checkpoint's use_se (GFPGAN's uses use_se=False)."
        raise CheckpointMismatchError(f"Checkpoint {str(path)!r} does not fit {type(model).__name__}:\n{problems}{hint}")
    model.load_state_dict(state_dict, strict=True)
    return model
