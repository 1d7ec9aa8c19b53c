"""The 3x3 convolution every residual block in the network is made of."""
from torch import nn


def conv3x3(inplanes: int, outplanes: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 and no bias.

    Padding 1 keeps the spatial size at stride 1 (``H_out = (H + 2 - 3) // s + 1``).
    There is no bias because every use is followed by a BatchNorm, whose own
    shift (beta) would make a convolution bias redundant [Ioffe & Szegedy 2015].

    Args:
        inplanes: Channel number of inputs.
        outplanes: Channel number of outputs.
        stride: Stride of the convolution. Default: 1.

    Shape:
        - Input: ``(N, inplanes, H, W)``
        - Output: ``(N, outplanes, (H - 1) // stride + 1, (W - 1) // stride + 1)``
    """
    for name, value in (("inplanes", inplanes), ("outplanes", outplanes), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"conv3x3: {name} must be a positive int, got {value!r}.")
    return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)
