"""What verification reads from a network: its embedding, a stage's feature map, and flip test-time augmentation.

A face network's embedding is its last layer, trained to tell the *training* identities apart. On a new domain
with few identities to train on (the book's chapter 11: real faces, 20 people), the last stages are the ones
that specialise most, and an earlier stage's output can verify new people better: features become more
specific to the training task the deeper they sit (Yosinski et al., "How transferable are features in deep
neural networks?", NeurIPS 2014). :class:`StageFeatures` reads one stage; :class:`FlipSum` adds the mirror
image. Both are modules around the network, so :func:`~resnet_arcface.eval.verify.embed`, ``arcface-verify``
and every scorer take them as they take the network itself.
"""
from typing import Tuple

import torch
from torch import nn

#: Where :class:`StageFeatures` can read: the output of a residual stage, or the embedding itself.
READOUTS: Tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4", "embedding")


class _Around(nn.Module):
    """A module around a network: attributes it lacks (``input_size``, ``embedding_dim``) are the network's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


class StageFeatures(_Around):
    """The output of one stage of a :class:`~resnet_arcface.ResNetArcFace`, flattened, as an embedding.

    ``stage="embedding"`` is the network itself. Otherwise the input runs through the stem and the residual
    stages up to ``stage``, exactly as in the network's forward, and the ``(N, C, H, W)`` map is flattened
    in C, H, W order: for the small network at 32 px, ``layer3`` gives 64 x 4 x 4 = 1,024 numbers. Other
    attributes (``input_size``) are the network's.

    Shape:
        - x: ``(N, C_in, S, S)`` as the network takes it; Output: ``(N, D)``
    """

    def __init__(self, model: nn.Module, stage: str = "embedding") -> None:
        if stage not in READOUTS:
            raise ValueError(f"StageFeatures: unknown stage {stage!r}; expected one of {list(READOUTS)}.")
        super().__init__(model)
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if self.stage == "embedding":
            return model(x)
        from ..nn.model import validate_input

        validate_input(x, model.training, model.input_size)
        x = model.maxpool(model.prelu(model.bn1(model.conv1(x))))
        for name in READOUTS[:READOUTS.index(self.stage) + 1]:
            x = getattr(model, name)(x)
        return torch.flatten(x, 1)


class FlipSum(_Around):
    """Flip test-time augmentation: ``model(x) + model(mirror of x)``, as InsightFace's verification sums them.

    The sum is of the raw embeddings; :func:`~resnet_arcface.eval.verify.embed` normalises it afterwards. Both
    halves go through ``model`` as one batch (in eval mode a batch's rows do not affect each other). Other
    attributes (``input_size``) are those of ``model``.

    Shape:
        - x: ``(N, C, H, W)``; Output: ``(N, D)``
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.model(torch.cat([x, x.flip(-1)]))
        return both[:len(x)] + both[len(x):]
