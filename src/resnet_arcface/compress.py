"""Compressing ``fc5``: it holds 65 % of GFPGAN's parameters and 0.7 % of its multiply-adds.

``fc5`` maps the flattened ``512 x 8 x 8`` map to 512 numbers: 16.8 M weights, 67 MB in float32, so
the checkpoint's size is nearly all ``fc5``. Two ways to shrink it:

- **fp16 storage**: save ``fc5.weight`` in half precision (11 significant bits) and widen it back to
  float32 when loading. Half the bytes; the network then runs exactly as before, on rounded weights.
- **int8**: one signed byte per weight plus one float32 scale per output row (symmetric, per-channel
  [Jacob et al. 2018]). A quarter of the bytes. Stored that way it is widened on loading too; run as
  *dynamic quantisation* (ONNX Runtime quantises each activation row on the fly and multiplies in
  integers), it also reads four times fewer weight bytes per call, which helps when ``fc5`` is
  memory-bound (batch 1).

The convolutions are left in float32: they hold the compute, and the exact backends of
:mod:`resnet_arcface.inference` are about them.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
from typing import Dict, Mapping

import torch

__all__ = ["FC5_FORMATS", "compress_state_dict", "decompress_state_dict", "checkpoint_bytes", "quantize_fc5_onnx"]

#: How ``fc5.weight`` can be stored.
FC5_FORMATS = ("fp32", "fp16", "int8")
_SCALE = "fc5.weight_scale"  # the int8 format's extra entry: one float32 scale per output row


def compress_state_dict(state_dict: Mapping[str, torch.Tensor], fc5: str = "int8") -> Dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with ``fc5.weight`` stored as ``fc5`` says (everything else unchanged).

    Args:
        state_dict: A ResNetArcFace state_dict.
        fc5: ``"fp32"`` (unchanged), ``"fp16"`` or ``"int8"`` (adds ``fc5.weight_scale``, shape ``(D,)``).

    Returns:
        The compressed state_dict; :func:`decompress_state_dict` turns it back into a loadable one.
    """
    if fc5 not in FC5_FORMATS:
        raise ValueError(f"fc5 must be one of {FC5_FORMATS}, got {fc5!r}.")
    if "fc5.weight" not in state_dict:
        raise ValueError("compress_state_dict: no 'fc5.weight' in this state_dict; is it a ResNetArcFace's?")
    out = dict(state_dict)
    weight = state_dict["fc5.weight"].detach().float()  # (D, C*H*W)
    if fc5 == "fp16":
        out["fc5.weight"] = weight.half()
    elif fc5 == "int8":
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # symmetric: the largest |w| of a row -> 127
        out["fc5.weight"] = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out[_SCALE] = scale
    return out


def decompress_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Undo :func:`compress_state_dict`: ``fc5.weight`` back in float32, ready for ``load_state_dict``."""
    out = dict(state_dict)
    weight = out["fc5.weight"]
    if weight.dtype == torch.int8:
        if _SCALE not in out:
            raise ValueError(f"an int8 'fc5.weight' needs its per-row scales '{_SCALE}', which are missing.")
        out["fc5.weight"] = weight.float() * out.pop(_SCALE)[:, None]
    else:
        out["fc5.weight"] = weight.float()
    return out


def checkpoint_bytes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Size in bytes of ``torch.save(state_dict)``: what the checkpoint file would take on disk."""
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.getbuffer().nbytes


def quantize_fc5_onnx(proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """Dynamic int8 quantisation of ``fc5`` alone in an exported model (ONNX Runtime's quantiser).

    Weights become int8 per output channel; activations are quantised per call. Only the node that
    reads ``fc5.weight`` changes, so SE gates and convolutions stay float32.

    Args:
        proto: A model from :func:`resnet_arcface.inference.export_onnx`.

    Returns:
        The quantised model, to run with :func:`resnet_arcface.inference.onnx_session`.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fc5_nodes = [n.name for n in proto.graph.node if any(i.startswith("fc5.weight") for i in n.input)]
    if len(fc5_nodes) != 1:
        raise ValueError(f"expected one node reading fc5.weight in the exported model, found {fc5_nodes}.")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fc5_int8.onnx")
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing whole CNNs; we change one node
        try:
            quantize_dynamic(proto, path, nodes_to_quantize=fc5_nodes, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return onnx.load(path)
