"""Fast inference: exact BatchNorm folding, backends (channels_last, bf16, torch.compile, ONNX Runtime),
fc5 compression and the benchmark. ONNX Runtime is optional (the ``fast`` extra)."""
from .folding import fold_batchnorm, fold_bn_linear, fold_conv_bn, fold_linear_bn
from .inference import BACKENDS, Embedder, available_backends, optimize

__all__ = ["fold_batchnorm", "fold_conv_bn", "fold_linear_bn", "fold_bn_linear", "optimize", "Embedder",
           "available_backends", "BACKENDS"]
