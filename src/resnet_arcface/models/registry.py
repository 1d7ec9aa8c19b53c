"""The model registry, in timm's manner: ``create_model(name, pretrained=..., **overrides)`` and ``list_models()``.

Each architecture has exactly one name:

- ``"resnet_arcface18"``: GFPGAN's identity network (IRBlocks 2-2-2-2, no SE, widths 64-512, 128x128 gray
  input, 512-d embedding; 25,627,081 parameters). GFPGAN's ``arcface_resnet18.pth`` loads into it.
- ``"resnet_arcface_small"``: the same design at a quarter of the width on 32x32 faces with a 128-d
  embedding; the package's shipped ``"synthetic"`` weights are this network.

Every model comes back with its ``pretrained_cfg`` (:class:`~resnet_arcface.nn.model.PretrainedCfg`), from
which :func:`resnet_arcface.data.transforms.transform_for` builds the transform that feeds it.
"""
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch

from ..nn.model import GFPGAN_CONFIG, SMALL_CONFIG, ResNetArcFace, resolve_block
from .checkpoint import load_checkpoint
from .shipped import AVAILABLE as SHIPPED_WEIGHTS
from .shipped import pretrained as shipped_pretrained

__all__ = ["create_model", "list_models", "model_config", "MODELS"]

#: Architecture name -> ``ResNetArcFace`` arguments, and the names of the weights that ship for it.
MODELS: Mapping[str, Tuple[Mapping[str, Any], Tuple[str, ...]]] = {
    "resnet_arcface18": (GFPGAN_CONFIG, ()),
    "resnet_arcface_small": (SMALL_CONFIG, SHIPPED_WEIGHTS),
}


def list_models(pretrained: bool = False) -> List[str]:
    """The architecture names :func:`create_model` knows, sorted; with ``pretrained=True`` only those that
    have shipped weights (a checkpoint path works for every architecture)."""
    return sorted(name for name, (_, weights) in MODELS.items() if weights or not pretrained)


def model_config(name: str, **overrides: Any) -> Dict[str, Any]:
    """The :class:`~resnet_arcface.ResNetArcFace` arguments of architecture ``name``, with ``overrides`` applied.

    Raises:
        ValueError: an unknown name, or an override that is not a ``ResNetArcFace`` argument.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {list_models()}.")
    config = dict(MODELS[name][0])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"create_model({name!r}) got unknown argument(s) {unknown}; it accepts {sorted(config)}.")
    return {**config, **overrides}


def create_model(name: str, pretrained: Union[None, str, Path] = None, *,
                 map_location: Union[str, torch.device] = "cpu", **overrides: Any) -> ResNetArcFace:
    """Build architecture ``name``, optionally with weights.

    Args:
        name: One of :func:`list_models`.
        pretrained: None (fresh weights, the reference's initialisation), the name of shipped weights
            (``"synthetic"``, for ``resnet_arcface_small``), or the path of a local state_dict, loaded safely
            and strictly (:func:`resnet_arcface.load_checkpoint`; GFPGAN's ``arcface_resnet18.pth`` for
            ``resnet_arcface18``). Nothing is downloaded.
        map_location: Where to load the weights' tensors.
        **overrides: Any :class:`~resnet_arcface.ResNetArcFace` argument, replacing the architecture's value
            (e.g. ``input_size=64``). Shipped weights accept only overrides that leave their shapes alone.

    Returns:
        The network with its ``pretrained_cfg``; in eval mode when weights were loaded (as it is used for
        inference), else in train mode (as a fresh ``nn.Module`` is).

    Raises:
        ValueError: an unknown name, override or ``pretrained`` value (the message lists the choices).
        FileNotFoundError: ``pretrained`` names a file that does not exist.
        CheckpointMismatchError: the checkpoint's keys or shapes do not fit the architecture.
    """
    config = model_config(name, **overrides)
    if pretrained is None:
        return ResNetArcFace(**config)
    shipped = MODELS[name][1]
    if isinstance(pretrained, str) and pretrained in SHIPPED_WEIGHTS:
        if pretrained not in shipped:
            owners = [n for n, (_, w) in MODELS.items() if pretrained in w]
            raise ValueError(f"The shipped {pretrained!r} weights are for {owners}, not {name!r}. For {name!r} pass "
                             f"pretrained=None or the path of a checkpoint (e.g. GFPGAN's arcface_resnet18.pth).")
        model = shipped_pretrained(pretrained, map_location=map_location)
        differ = {k: (v, getattr(model, k)) for k, v in _attributes(config).items() if getattr(model, k) != v}
        if differ:
            raise ValueError(f"The shipped {pretrained!r} weights are {name!r} as it is; the overrides change "
                             f"{ {k: v[0] for k, v in differ.items()} } (the weights have "
                             f"{ {k: v[1] for k, v in differ.items()} }). Drop those overrides.")
        return model
    if isinstance(pretrained, (str, Path)) and (isinstance(pretrained, Path) or _looks_like_path(pretrained)):
        model = ResNetArcFace(**config)
        load_checkpoint(model, pretrained, map_location=map_location)
        return model.eval()
    raise ValueError(f"pretrained must be None, one of the shipped weights {list(SHIPPED_WEIGHTS)} (for "
                     f"{list_models(pretrained=True)}), or the path of a checkpoint file; got {pretrained!r}.")


def _looks_like_path(text: str) -> bool:
    """A string names a file if it has a separator or a suffix (``weights.pt``), or exists."""
    return "/" in text or "\\" in text or Path(text).suffix != "" or Path(text).exists()


def _attributes(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The configuration as the attributes a built network reports (``block`` is its class, tuples stay tuples)."""
    out = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.items()}
    out["block"] = resolve_block(out["block"])
    return out

