"""Squeeze-and-Excitation: a learned per-channel gate [Hu et al. 2018]."""
import torch
from torch import nn


class SEBlock(nn.Module):
    """Squeeze-and-Excitation block.

    *Squeeze* each channel to its spatial mean, *excite* through a two-layer
    bottleneck MLP (``channel -> channel // reduction -> channel``) ending in a
    sigmoid, and multiply every channel by its gate in ``(0, 1)``.

    Args:
        channel: Channel number of inputs (and outputs).
        reduction: Channel reduction ratio of the bottleneck MLP. Default: 16.

    Shape:
        - Input: ``(N, channel, H, W)``
        - Output: ``(N, channel, H, W)``, the input with each channel rescaled.
    """

    def __init__(self, channel: int, reduction: int = 16) -> None:
        super().__init__()
        if channel // reduction < 1:
            raise ValueError(
                f"SEBlock: channel // reduction must be at least 1, got channel={channel}, "
                f"reduction={reduction}. Use channel >= reduction or a smaller reduction."
            )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)  # pool to 1x1, dropping spatial information
        # Names fc.0 .. fc.3 are state_dict keys of the reference: keep the Sequential.
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.PReLU(),
            nn.Linear(channel // reduction, channel),
            nn.Sigmoid(),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate values, shape ``(N, channel, 1, 1)``, each in ``(0, 1)``."""
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)  # squeeze: (N, C)
        return self.fc(y).view(b, c, 1, 1)  # excite: (N, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
