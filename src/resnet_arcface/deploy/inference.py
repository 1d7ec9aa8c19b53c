"""A fast path for inference: ``optimize(model)`` returns a callable that embeds faces faster.

Backends (every one but ``"bf16"`` gives the same embeddings as eager float32, to float rounding: the
largest difference is at most :data:`TOLERANCE` times the largest embedding value, checked on faces):

- ``"eager"``: the model itself, under ``torch.inference_mode``.
- ``"channels_last"``: activations stored NHWC, which oneDNN's (and cuDNN's) convolutions prefer.
- ``"fold"``: every BatchNorm folded away (:func:`fold_batchnorm` with ``bn0=True``): those that follow a
  convolution into its weights and bias, each block's ``bn0`` into the next convolution's weights plus a
  constant bias map.
- ``"fold_channels_last"``: both of the above.
- ``"compile"``: ``torch.compile`` (TorchInductor, with weight freezing on CPU) [Ansel et al. 2024]:
  it generates fused kernels, at a cold-start cost of tens of seconds on a laptop CPU.
- ``"onnxruntime"``: the folded model, rewritten into operators ONNX Runtime fuses
  (:func:`for_onnx_runtime`; :func:`export_for_onnx_runtime`), exported to ONNX (checked with ``onnx.checker``) and run by ONNX Runtime,
  whose graph optimisations fuse operators and re-lay convolutions out in blocked NCHWc form for the
  CPU's vector width.
- ``"bf16"``: CUDA (or a CPU with bf16 support) with bfloat16 autocast and channels_last. NOT exact
  (about three significant digits); its agreement with float32 is measured and reported separately.

``"auto"`` takes the first backend in :data:`AUTO_ORDER` that is installed and works on the model's
device; the order is a fixed preference justified by ``python -m resnet_arcface.deploy.bench`` (see
``benchmarks/README.md``), not a measurement at call time, so it is quick and deterministic.

Everything here is for inference only, in eval mode: BatchNorm folding uses running statistics and
ONNX Runtime does not compute gradients. GFPGAN's identity loss needs gradients with respect to the
input; for that, use the nn.Module from :func:`fold_batchnorm` (optionally in channels_last) directly.

Input convention (see :mod:`resnet_arcface.data.transforms`): an :class:`Embedder` is a faster ``model(x)``:
it takes the network input ``x`` (``transform_for(model)(images)``), not images, and returns the embeddings
as the network computes them (``normalize=True`` gives unit-norm rows, as :func:`resnet_arcface.embed` does).
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .folding import fold_batchnorm, fold_bn_linear, fold_conv_bn, fold_linear_bn  # noqa: F401 (public here)
from ..data.synthetic import synthetic_faces
from ..data.transforms import resolve_cfg, transform_for
from ..device import model_device
from ..nn.model import validate_input
from .._optional import require

__all__ = ["optimize", "Embedder", "BackendUnavailable", "BACKENDS", "AUTO_ORDER", "available_backends",
           "fold_conv_bn", "fold_batchnorm", "to_channels_last", "for_onnx_runtime", "export_onnx",
           "export_for_onnx_runtime", "onnx_session", "check_faces", "max_error", "TOLERANCE"]

#: Every backend ``optimize`` knows, in the order the benchmark reports them.
BACKENDS: Tuple[str, ...] = ("eager", "channels_last", "fold", "fold_channels_last", "compile", "onnxruntime", "bf16")
#: Backends that must match eager float32 within :data:`TOLERANCE`.
EXACT = frozenset(BACKENDS) - {"bf16"}
#: ``"auto"``'s preference per device type, fastest first as measured by the benchmark. ``compile`` is
#: left out: on CPU it was not faster than ONNX Runtime and costs a long cold compile on first use.
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {
    "cpu": ("onnxruntime", "fold_channels_last", "eager"),
    "cuda": ("fold_channels_last", "eager"),
}
#: The exactness bar, an ``assert_close``-level tolerance: the largest absolute difference from eager float32,
#: divided by the largest absolute value of eager's embeddings, on preprocessed faces (:func:`check_faces`).
#: Exact rewrites differ by float rounding only: 6e-7 for every fold on the shipped weights, 2.5e-6 on GFPGAN's
#: configuration. A fold that forgets BatchNorm's eps is off by 9e-4 on the shipped weights and fails, although
#: its cosine with eager (0.9999995) would pass a cosine bar of 0.99999.
TOLERANCE = 1e-5
#: Faces :func:`optimize` checks a backend on (synthetic identities, rendered at the model's input size).
CHECK_FACES = 4


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (a package is missing, or the device does not support it)."""


def available_backends(device: torch.device | str = "cpu") -> Dict[str, Optional[str]]:
    """Which backends can run on ``device``: name -> None if available, else the reason why not."""
    device = torch.device(device)
    status: Dict[str, Optional[str]] = {name: None for name in BACKENDS}
    missing = [p for p in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(p) is None]
    if missing:
        status["onnxruntime"] = (f"the 'onnxruntime' backend needs {' and '.join(missing)}: "
                                 f"pip install {' '.join(missing)}  (or pip install 'resnet-arcface[fast]')")
    elif tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6):
        status["onnxruntime"] = f"the 'onnxruntime' backend exports with torch.onnx.export(dynamo=True): torch >= 2.6"
    elif device.type not in ("cpu", "cuda"):
        status["onnxruntime"] = f"the 'onnxruntime' backend runs on cpu or cuda, not {device.type}"
    elif device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            status["onnxruntime"] = ("the installed onnxruntime has no CUDAExecutionProvider for a model on cuda "
                                     "(install onnxruntime-gpu, or move the model to the CPU)")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        status["bf16"] = "this GPU does not support bfloat16"
    elif device.type not in ("cuda", "cpu"):
        status["bf16"] = f"bf16 autocast is offered for cuda and cpu here, not {device.type}"
    if device.type == "mps":
        status["compile"] = "torch.compile's CPU/CUDA code generators do not target mps"
    return status


class Embedder:
    """What :func:`optimize` returns: call it on faces to get embeddings.

    Attributes:
        backend: The backend that runs (``"auto"`` resolved to a name).
        device: Where inputs are expected and outputs returned.
        exact: Whether the backend is held to :data:`TOLERANCE` against eager float32.
        setup_s: Seconds spent building it (folding, exporting, compiling, warm-up): the cold start.
        max_error: Largest difference from eager float32 on :func:`check_faces`, relative to eager's largest
            value (:func:`max_error`; None when built with ``check=False``). Exact backends keep it within
            :data:`TOLERANCE`.
        min_cosine: Smallest per-embedding cosine with eager float32 on the same faces (None likewise).
        fallbacks: For ``"auto"``, the backends skipped and why.
        onnx_model: The exported, checked ``onnx.ModelProto`` (``"onnxruntime"`` only; else None).

    Call it as ``embedder(x, normalize=False)``: ``x`` is the network input (``transform_for(model)(images)``),
    and the embeddings come back as the network computes them, or with unit L2 norm with ``normalize=True``.

    Shape:
        - Input: ``(N, 1, S, S)`` float, ``S = model.input_size`` (128 for GFPGAN), on ``device``.
        - Output: ``(N, D)`` float32 embeddings, ``D = model.embedding_dim`` (512 for GFPGAN).
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], backend: str, device: torch.device,
                 input_size: int, batch_size: Optional[int], pad_to_batch: bool) -> None:
        self._run, self.backend, self.device = run, backend, device
        self.input_size, self.batch_size, self._pad = input_size, batch_size, pad_to_batch
        self.exact = backend in EXACT
        self.setup_s = 0.0
        self.max_error: Optional[float] = None
        self.min_cosine: Optional[float] = None
        self.fallbacks: List[Tuple[str, str]] = []
        self.onnx_model: object = None

    def __call__(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        validate_input(x, training=False, input_size=self.input_size)  # every backend answers bad input clearly
        with torch.inference_mode():
            if self.batch_size is None or x.shape[0] <= self.batch_size and not self._pad:
                out = self._run(x)
            else:
                outs = []
                for chunk in x.split(self.batch_size):  # bounded memory; static-shape backends need full chunks
                    n = chunk.shape[0]
                    if self._pad and n < self.batch_size:  # eval-mode samples do not interact: zero rows are harmless
                        chunk = torch.cat([chunk, chunk.new_zeros(self.batch_size - n, *chunk.shape[1:])])
                    outs.append(self._run(chunk)[:n])
                out = torch.cat(outs)
            return F.normalize(out, dim=1) if normalize else out

    def __repr__(self) -> str:
        cos = ("unchecked" if self.max_error is None else
               f"vs eager fp32: max error {self.max_error:.1e}, min cosine {self.min_cosine:.7f}")
        return (f"Embedder(backend={self.backend!r}, device={self.device}, batch_size={self.batch_size}, "
                f"setup {self.setup_s:.2f} s, {cos})")


def optimize(model: nn.Module, backend: str = "auto", batch_size: Optional[int] = None, *,
             threads: Optional[int] = None, check: bool = True) -> Embedder:
    """Return a faster callable that computes ``model``'s embeddings (inference only).

    Args:
        model: A :class:`~resnet_arcface.ResNetArcFace` in eval mode, on the device it should run on.
            It is not modified (backends work on copies).
        backend: One of :data:`BACKENDS`, or ``"auto"`` (see :data:`AUTO_ORDER`).
        batch_size: None: any batch size, run whole. An int: inputs are run in chunks of at most this many,
            and ``compile`` and ``onnxruntime`` are specialised to exactly this batch size (the last chunk is
            zero-padded; harmless, since in eval mode samples do not interact).
        threads: ONNX Runtime's intra-op threads. Default: ``torch.get_num_threads()``, so that every
            backend competes on the same cores.
        check: Compare with eager float32 on :func:`check_faces` at build time; raise if an exact backend's
            :func:`max_error` exceeds :data:`TOLERANCE`, and record ``max_error`` and ``min_cosine`` either way.

    Returns:
        An :class:`Embedder`: ``embedder(x)`` maps the network input ``(N, 1, S, S)`` to ``(N, D)``.

    Raises:
        ValueError: the model is in train mode, or the backend or batch size is unknown or invalid.
        BackendUnavailable: the requested backend cannot run here (the message says what to install).
    """
    if model.training:
        raise ValueError("optimize() is for inference: call model.eval() first. The fast backends use BatchNorm's "
                         "running statistics (folding), turn dropout off and compute no gradients; to train, or to "
                         "backpropagate through the network as GFPGAN's identity loss does, use the model itself.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}.")
    device = model_device(model)
    status = available_backends(device)
    if backend == "auto":
        fallbacks = []
        for name in AUTO_ORDER.get(device.type, ("eager",)):
            if status[name] is not None:
                fallbacks.append((name, status[name]))
                continue
            try:
                embedder = optimize(model, name, batch_size, threads=threads, check=check)
            except (BackendUnavailable, ImportError, RuntimeError) as err:  # a backend that fails here falls back
                fallbacks.append((name, f"{type(err).__name__}: {err}"))
                continue
            embedder.fallbacks = fallbacks
            return embedder
        raise BackendUnavailable(f"no backend ran on {device}: {fallbacks}")  # eager always runs; unreachable
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected 'auto' or one of {list(BACKENDS)}.")
    if status[backend] is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {status[backend]}. "
                                 f"backend='auto' picks the fastest available one.")

    faces = check_faces(model)  # rendered before the clock starts: not part of the backend's cold start
    start = time.perf_counter()
    input_size = resolve_cfg(model).input_size
    run, pad, onnx_model = _build(model, backend, batch_size, device, threads)
    embedder = Embedder(run, backend, device, input_size, batch_size, pad)
    embedder.onnx_model = onnx_model
    out = embedder(faces)  # the first call compiles, allocates, and picks kernels: part of the cold start
    embedder.setup_s = time.perf_counter() - start
    if check:
        with torch.inference_mode():
            reference = model(faces).float()
        embedder.max_error = max_error(out, reference)
        embedder.min_cosine = F.cosine_similarity(out.float(), reference, dim=1).min().item()
        if embedder.exact and not embedder.max_error <= TOLERANCE:
            raise RuntimeError(f"backend {backend!r} is not exact on this model: on {len(faces)} faces its embeddings "
                               f"differ from eager float32's by {embedder.max_error:.2e} of their largest value, more "
                               f"than float rounding ({TOLERANCE:.0e}). Please report this as a bug.")
    return embedder


def check_faces(model: nn.Module, n: int = CHECK_FACES) -> torch.Tensor:
    """``n`` synthetic faces (fixed identities) through the model's transform: the input a backend is checked on.

    Faces, not noise: noise drives activations and BatchNorm statistics far from what the network was
    fitted to, and hides or exaggerates errors that real inputs meet.

    Shape:
        - Output: ``(n, 1, S, S)`` on the model's device, ``S = model.input_size``.
    """
    images, _ = synthetic_faces(n, 1, size=resolve_cfg(model).input_size, seed=0)
    return transform_for(model)(images).to(model_device(model))


def max_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest absolute difference of ``out`` from ``reference``, divided by ``reference``'s largest
    absolute value: the measure :data:`TOLERANCE` bounds (``torch.testing.assert_close`` with ``rtol=0`` and
    ``atol = TOLERANCE * max|reference|``). Embeddings have no natural per-element scale, so the whole batch's
    largest value sets it."""
    out, reference = out.detach().float().cpu(), reference.detach().float().cpu()
    if out.shape != reference.shape:
        raise ValueError(f"max_error: shapes differ, {tuple(out.shape)} and {tuple(reference.shape)}.")
    return float((out - reference).abs().max() / reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny))


def _build(model: nn.Module, backend: str, batch_size: Optional[int], device: torch.device,
           threads: Optional[int]) -> Tuple[Callable[[torch.Tensor], torch.Tensor], bool, object]:
    """The backend's run function, whether it needs full, zero-padded chunks (static shapes), and the
    exported ONNX model (ONNX Runtime only, else None)."""
    if backend == "eager":
        return model, False, None
    if backend == "fold":
        return fold_batchnorm(model, bn0=True), False, None
    if backend in ("channels_last", "fold_channels_last"):
        net = to_channels_last(fold_batchnorm(model, bn0=True) if backend == "fold_channels_last" else model)
        return (lambda x: net(x.contiguous(memory_format=torch.channels_last))), False, None
    if backend == "bf16":
        net = to_channels_last(fold_batchnorm(model, bn0=True))

        def run_bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return net(x.contiguous(memory_format=torch.channels_last)).float()
        return run_bf16, False, None
    if backend == "compile":
        # Freezing lets Inductor treat the weights as constants: it folds BatchNorm into the convolutions
        # itself and pre-packs the weights in oneDNN's blocked layout (the recommended CPU inference setting).
        options = {"freezing": True} if device.type == "cpu" else {}
        net = torch.compile(copy.deepcopy(model), dynamic=batch_size is None, options=options)
        return net, batch_size is not None, None
    if backend == "onnxruntime":
        proto = export_for_onnx_runtime(model, batch_size)
        session = onnx_session(proto, threads, device)
        return (lambda x: _run_session(session, x)), batch_size is not None, proto
    raise AssertionError(backend)


def to_channels_last(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its weights in channels_last (NHWC) memory order.

    ``forward`` flattens the last map with ``torch.flatten``, which reads it in C, H, W order (what ``fc5``'s
    weights expect) whatever its memory format, so nothing else has to change.
    """
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def for_onnx_runtime(model: nn.Module) -> nn.Module:
    """A copy of a (folded) model rewritten, exactly, into operators ONNX Runtime's CPU optimiser fuses.

    Two rewrites, each computing the same function:

    - A one-slope ``nn.PReLU`` becomes ``nn.LeakyReLU`` with that slope (both are ``x`` for ``x >= 0`` and
      ``slope * x`` below). ONNX Runtime fuses LeakyRelu into the convolution before it; it does not fuse
      PRelu, and each unfused activation forces the data out of its fast blocked (NCHWc) layout and back.
    - A remaining ``BatchNorm2d`` (a ``bn0`` left by ``fold_batchnorm(model)`` without ``bn0=True``) becomes
      the per-channel affine map it is in eval mode, written as a depthwise 1x1 convolution with a bias.
      No padding is involved, so this is exact, and a convolution stays in the blocked layout.
    """
    from .folding import bn_scale_shift

    net = copy.deepcopy(model).eval()
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.PReLU) and child.weight.numel() == 1:
                setattr(module, name, nn.LeakyReLU(float(child.weight.item())))
            elif isinstance(child, nn.BatchNorm2d):
                scale, shift = bn_scale_shift(child)
                affine = nn.Conv2d(child.num_features, child.num_features, 1, groups=child.num_features, bias=True,
                                   device=scale.device, dtype=child.running_var.dtype)
                with torch.no_grad():
                    affine.weight.copy_(scale.view(-1, 1, 1, 1))
                    affine.bias.copy_(shift)
                setattr(module, name, affine)
    return net


def export_for_onnx_runtime(model: nn.Module, batch_size: Optional[int] = None) -> "onnx.ModelProto":  # noqa: F821
    """The ONNX model the ``"onnxruntime"`` backend runs: ``model`` folded (``bn0`` too), rewritten with
    :func:`for_onnx_runtime`, exported on the CPU at its input size and checked (:func:`export_onnx`).

    Args:
        model: An eval-mode ResNetArcFace on any device (it is not modified).
        batch_size: None for a dynamic batch dimension, else a fixed one.
    """
    return export_onnx(for_onnx_runtime(fold_batchnorm(model, bn0=True).cpu()), batch_size=batch_size)


def export_onnx(model: nn.Module, input_size: Optional[int] = None,
                batch_size: Optional[int] = None) -> "onnx.ModelProto":  # noqa: F821
    """Export an eval-mode model to ONNX with ``torch.onnx.export`` and check it with ``onnx.checker``.

    Args:
        model: The (CPU, eval-mode) network.
        input_size: Side of the network input. Default: the model's (``model.pretrained_cfg``).
        batch_size: None for a dynamic batch dimension, else a fixed one (lets ONNX Runtime plan memory once).

    Returns:
        The checked ``onnx.ModelProto``; input ``"faces"`` ``(N, 1, S, S)``, output ``"embeddings"`` ``(N, D)``.
    """
    onnx = require("onnx", "fast", "export_onnx")

    example = torch.zeros(batch_size or 2, 1, *(resolve_cfg(model).shape[1:] if input_size is None
                                                 else (input_size, input_size)))
    dynamic = None if batch_size else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    exporter_log = logging.getLogger("torch.onnx")  # notes such as "torchvision is not installed"
    level = exporter_log.level
    with warnings.catch_warnings():  # the exporter's internal deprecation notices are not the caller's to fix
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        exporter_log.setLevel(logging.ERROR)
        try:
            # optimize=False: ONNX Runtime runs its own graph optimisations on loading, so the exporter's
            # (onnxscript's) pass would only double the export time.
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic,
                                        input_names=["faces"], output_names=["embeddings"], optimize=False,
                                        verbose=False)
        finally:
            exporter_log.setLevel(level)
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)  # structure, types and shapes are valid ONNX
    return proto


def onnx_session(proto: "onnx.ModelProto", threads: Optional[int] = None,  # noqa: F821
                 device: torch.device | str = "cpu") -> "onnxruntime.InferenceSession":  # noqa: F821
    """An ONNX Runtime session with every graph optimisation and a deliberate thread count.

    ``intra_op_num_threads`` defaults to ``torch.get_num_threads()``: ONNX Runtime's own default is one
    thread per physical core, and on a machine shared with other work (or in a benchmark against PyTorch)
    it should use what PyTorch uses. ``inter_op`` is 1: this network is one chain of operators.
    """
    ort = require("onnxruntime", "fast", "onnx_session")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fusions + NCHWc layout
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # ONNX Runtime's pool spins for a while after each run; the spinning threads then steal the cores from
    # whatever runs next in the process (PyTorch, a GFPGAN training step, or the eager side of a benchmark).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    providers = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)


def _run_session(session: "onnxruntime.InferenceSession", x: torch.Tensor) -> torch.Tensor:  # noqa: F821
    out = session.run(None, {"faces": x.detach().float().cpu().contiguous().numpy()})[0]
    return torch.from_numpy(out).to(x.device)

