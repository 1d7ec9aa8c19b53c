"""Fast inference: exact BatchNorm folding (``bn0`` included, with a bias map), backends (channels_last, bf16,
torch.compile, ONNX Runtime) held to :data:`~.inference.TOLERANCE` on faces, fc5 compression and the benchmark.
ONNX Runtime is optional (the ``fast`` extra)."""
from .folding import ConvBiasMap, fold_batchnorm, fold_bn_conv, fold_bn_linear, fold_conv_bn, fold_linear_bn
from .inference import BACKENDS, TOLERANCE, Embedder, available_backends, optimize

__all__ = ["fold_batchnorm", "fold_conv_bn", "fold_linear_bn", "fold_bn_linear", "fold_bn_conv", "ConvBiasMap",
           "optimize", "Embedder", "available_backends", "BACKENDS", "TOLERANCE"]
