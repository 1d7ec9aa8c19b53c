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
:mod:`resnet_arcface.deploy.inference` are about them.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
from typing import Dict, Mapping

import torch

from .._optional import require

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


_FC5_MATMUL = "fc5_matmul"  # the name of fc5's product once it is a MatMul (see _fc5_as_matmul)


def _fc5_as_matmul(proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """A copy of ``proto`` with fc5's ``Gemm`` written as ``MatMul`` + ``Add``, under a name of our own.

    ONNX Runtime's quantiser rewrites a Gemm into a MatMul itself but gives it a new name, so a Gemm
    cannot be singled out with ``nodes_to_quantize``; a MatMul we name ourselves can.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = copy.deepcopy(proto)
    graph = model.graph
    nodes = [n for n in graph.node if any(i.startswith("fc5.weight") for i in n.input)]
    if len(nodes) != 1 or nodes[0].op_type != "Gemm":
        raise ValueError(f"expected one Gemm reading fc5.weight in the exported model, found "
                         f"{[(n.op_type, n.name) for n in nodes]}.")
    gemm = nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        raise ValueError(f"fc5's Gemm has unexpected attributes {attrs}.")
    initializers = {t.name: t for t in graph.initializer}
    weight = numpy_helper.to_array(initializers[gemm.input[1]])  # (D, K) with transB=1
    weight = weight.T.copy() if attrs.get("transB", 0) else weight  # (K, D): MatMul's layout
    graph.initializer.append(numpy_helper.from_array(weight, "fc5.weight_kd"))
    product = helper.make_node("MatMul", [gemm.input[0], "fc5.weight_kd"], ["fc5_product"], name=_FC5_MATMUL)
    replacement = [product]
    if len(gemm.input) > 2 and gemm.input[2]:
        replacement.append(helper.make_node("Add", ["fc5_product", gemm.input[2]], list(gemm.output), name="fc5_bias"))
    else:
        product.output[0] = gemm.output[0]
    position = list(graph.node).index(gemm)
    graph.node.remove(gemm)
    for offset, node in enumerate(replacement):
        graph.node.insert(position + offset, node)
    onnx.checker.check_model(model)
    return model


def quantize_fc5_onnx(proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """Dynamic int8 quantisation of ``fc5`` alone in an exported model (ONNX Runtime's quantiser).

    Weights become int8 per output channel; activations are quantised per call. Only the node that
    reads ``fc5.weight`` changes, so SE gates and convolutions stay float32.

    Args:
        proto: A model from :func:`resnet_arcface.deploy.inference.export_onnx`.

    Returns:
        The quantised model, to run with :func:`resnet_arcface.deploy.inference.onnx_session`.
    """
    require("onnxruntime", "fast", "quantize_fc5_onnx")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        exported, prepared, quantised = (os.path.join(folder, f) for f in ("a.onnx", "b.onnx", "c.onnx"))
        onnx.save(_fc5_as_matmul(proto), exported)
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)  # the quantiser logs advice meant for whole CNNs; we change one node
        try:
            # The quantiser needs every tensor's shape; without this pass it silently quantises nothing.
            quant_pre_process(exported, prepared, skip_optimization=True, skip_symbolic_shape=True)
            quantize_dynamic(prepared, quantised, op_types_to_quantize=["MatMul"], nodes_to_quantize=[_FC5_MATMUL],
                             per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        model = onnx.load(quantised)
    integer = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    if len(integer) != 1:
        raise RuntimeError(f"ONNX Runtime's quantiser made {len(integer)} integer matrix products, expected one (fc5); "
                           "please report this with your onnxruntime version.")
    return model
