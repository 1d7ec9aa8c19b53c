"""Margin losses that train a face-embedding network, and GFPGAN's identity loss that uses one.

A classifier over training identities is the scaffolding that shapes the embedding space; it is thrown
away after training. ArcFace [Deng et al. 2019] and CosFace [Wang et al. 2018] compare each L2-normalised
embedding with L2-normalised class weights, so the logit of a class is ``s * cos(theta)``, and make the
*target* class harder to win by a margin: ``cos(theta_y + m)`` (angular, ArcFace) or ``cos(theta_y) - m``
(cosine, CosFace). Identities must then cluster tighter than a plain softmax asks for, which is what makes
the embedding verify identities it never saw.
"""
import math
from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import preprocess, resolve_cfg

#: The losses :class:`MarginHead` knows, with their InsightFace defaults ``(s, m)``.
#: ``softmax`` is the ArcFace paper's baseline: an ordinary linear classifier, no normalisation, no margin.
LOSSES = {"arcface": (64.0, 0.5), "cosface": (64.0, 0.35), "softmax": (None, None)}

# Below this, sin(theta) = sqrt(1 - cos^2) is taken as sqrt(_SIN2_EPS): d sqrt(x)/dx = 1 / (2 sqrt(x)) is
# infinite at x = 0 (cos = +-1), and clamp passes no gradient below its bound, so the gradient stays finite
# (at most about s sin(m) / sqrt(_SIN2_EPS) just inside +-1). It is needed even where torch.where picks the
# other branch: the unused branch gets a zero gradient, and sqrt's backward turns 0 * 1 / (2 sqrt(0)) into NaN.
_SIN2_EPS = 1e-7


def cosine_logits(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cosine between every L2-normalised embedding and every L2-normalised class weight row.

    Args:
        embeddings: The network's embeddings (any norm).
        weight: One row per class (any norm).

    Returns:
        ``cos(theta)`` in [-1, 1] (up to rounding), one row per embedding and one column per class.

    Shape:
        - embeddings: ``(N, D)``
        - weight: ``(C, D)``
        - Output: ``(N, C)``
    """
    if embeddings.dim() != 2 or weight.dim() != 2 or embeddings.shape[1] != weight.shape[1]:
        raise ValueError(f"cosine_logits expects embeddings (N, D) and weight (C, D) with the same D, got "
                         f"{tuple(embeddings.shape)} and {tuple(weight.shape)}.")
    return F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).t()


def _target_mask(cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``(N, C)`` mask of each row's target class, after checking the labels fit ``cosine``."""
    if cosine.dim() != 2 or labels.shape != (cosine.shape[0],):
        raise ValueError(f"expected cosine (N, C) and labels (N,), got {tuple(cosine.shape)} and {tuple(labels.shape)}.")
    num_classes = cosine.shape[1]
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}; use labels.long().")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}) (one column of cosine per class), got "
                         f"values in [{int(labels.min())}, {int(labels.max())}].")
    return F.one_hot(labels.long(), num_classes).bool()


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, s: float = 64.0, m: float = 0.5) -> torch.Tensor:
    r"""ArcFace's additive angular margin: ``s * cos(theta_y + m)`` for the target class, ``s * cos(theta)`` elsewhere.

    ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with
    ``sin(theta) = sqrt(max(1 - cos^2, eps))``, never through ``arccos``: the derivative of ``arccos`` (and of
    the square root) is infinite at ``cos = +-1``, which happens whenever an embedding points exactly at a class
    weight. With the clamp the gradient there is finite (``s * cos(m)`` on the target logit).

    **Past pi.** ``cos(theta + m)`` stops decreasing once ``theta + m > pi``: a target that moves *further* from
    its class would get a *higher* logit, i.e. be rewarded. Three conventions exist:

    - *Threshold* (taken here; the earlier ``ArcFace`` class of InsightFace's ``arcface_torch/losses.py``, and
      ``ArcMarginProduct`` in ronghuaiyang's arcface-pytorch, the code GFPGAN's network comes from, which
      names the constants ``th`` and ``mm``): when ``theta > pi - m``
      (``cos(theta) <= th = cos(pi - m)``) use ``cos(theta) - mm`` with ``mm = m sin(m)``, CosFace's linear
      penalty. The target logit then decreases with ``theta`` everywhere (it steps down by ``m sin(m) - (1 -
      cos m)`` at the threshold) and its gradient stays that of the formula it reports.
    - *Easy margin*: apply the margin only where ``cos(theta) > 0``. At ``theta = 90°`` the logit jumps *up*
      by ``sin(m)``, so it is not monotone; it eased early training and is rarely used now.
    - *InsightFace's current formula* (``CombinedMarginLoss`` in ``arcface_torch``): ``arccos``, add ``m``,
      ``cos``, all under ``torch.no_grad()`` and written in place, so the reported logit is ``cos(theta + m)``
      even past pi while the gradient is the plain ``s * cos(theta)`` one (a straight-through trick that is
      fast and stable but whose gradient is not that of the loss it reports; a gradient check would fail).

    The threshold form is monotone, needs no ``arccos`` and has an honest gradient, which is why it is used.

    Args:
        cosine: ``cos(theta)`` between embeddings and class weights (see :func:`cosine_logits`).
        labels: The target class of each row.
        s: Scale: the logits' temperature. InsightFace uses 64.
        m: Angular margin in radians, in ``[0, pi/2)``. InsightFace uses 0.5 (about 28.6°).

    Shape:
        - cosine: ``(N, C)``
        - labels: ``(N,)`` integer class indices
        - Output: ``(N, C)``
    """
    if not 0 <= m < math.pi / 2:
        raise ValueError(f"arcface_logits: m is an angle in radians in [0, pi/2), e.g. 0.5 (InsightFace); got {m}.")
    target = _target_mask(cosine, labels)
    sin = (1 - cosine * cosine).clamp_min(_SIN2_EPS).sqrt()
    cos_theta_m = cosine * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m  # the threshold and CosFace-style fallback
    margined = torch.where(cosine > th, cos_theta_m, cosine - mm)
    return s * torch.where(target, margined, cosine)


def cosface_logits(cosine: torch.Tensor, labels: torch.Tensor, s: float = 64.0, m: float = 0.35) -> torch.Tensor:
    """CosFace's additive cosine margin: ``s * (cos(theta_y) - m)`` for the target class, ``s * cos(theta)`` elsewhere.

    Linear in ``cos(theta)``, so its gradient is finite everywhere and it needs no special case.

    Args:
        cosine: ``cos(theta)`` between embeddings and class weights (see :func:`cosine_logits`).
        labels: The target class of each row.
        s: Scale (InsightFace: 64).
        m: Cosine margin (InsightFace: 0.35 to 0.4).

    Shape:
        - cosine: ``(N, C)``
        - labels: ``(N,)`` integer class indices
        - Output: ``(N, C)``
    """
    return s * (cosine - m * _target_mask(cosine, labels).to(cosine.dtype))


class MarginHead(nn.Module):
    """The training classifier over identities: class weights plus softmax, CosFace or ArcFace logits.

    Class weight rows start at unit norm. ArcFace and CosFace normalise them in every forward, so their
    norm only sets how far an optimizer step turns them: rows initialised small (e.g. ``0.01 * randn``)
    turn wildly in the first steps and can collapse ArcFace training.

    The logits are computed in float32 even under autocast: with ``s = 64``, bfloat16's 8-bit mantissa
    would round ``s * cos(theta)`` by up to 0.25, as large as the margins themselves.

    Args:
        embedding_dim: Size ``D`` of the embeddings.
        num_classes: Number ``C`` of training identities.
        loss: ``"arcface"``, ``"cosface"`` or ``"softmax"`` (plain linear classifier, the baseline).
        s: Scale; ``None`` takes the loss's default from :data:`LOSSES`. Not used by ``"softmax"``.
        m: Margin; ``None`` takes the loss's default. Not used by ``"softmax"``.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
        - ``head(embeddings, labels)``: scalar cross-entropy loss
        - ``head.logits(embeddings, labels)``: ``(N, C)``
    """

    def __init__(self, embedding_dim: int, num_classes: int, loss: str = "arcface",
                 s: Optional[float] = None, m: Optional[float] = None) -> None:
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; expected one of {sorted(LOSSES)}.")
        if num_classes < 2 or embedding_dim < 1:
            raise ValueError(f"MarginHead needs embedding_dim >= 1 and num_classes >= 2 (a classifier over at least "
                             f"two identities), got embedding_dim={embedding_dim}, num_classes={num_classes}.")
        if loss == "softmax" and (s is not None or m is not None):
            raise ValueError("The 'softmax' head is a plain linear classifier with no scale or margin; leave s and m None.")
        super().__init__()
        self.loss, self.num_classes = loss, num_classes
        default_s, default_m = LOSSES[loss]
        self.s = default_s if s is None else float(s)
        self.m = default_m if m is None else float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random directions at unit norm (see the class docstring for why the norm matters)."""
        with torch.no_grad():
            self.weight.copy_(F.normalize(torch.randn_like(self.weight), dim=1))

    def logits(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The logits the loss sees; without ``labels``, the margin-free ones (to predict a class)."""
        kind = embeddings.device.type  # autocast exists for cuda and cpu; elsewhere there is none to leave
        with torch.autocast(kind, enabled=False) if kind in ("cuda", "cpu") else nullcontext():
            embeddings = embeddings.float()
            if self.loss == "softmax":
                return embeddings @ self.weight.t()
            cosine = cosine_logits(embeddings, self.weight)
            if labels is None:
                return self.s * cosine
            margin = arcface_logits if self.loss == "arcface" else cosface_logits
            return margin(cosine, labels, s=self.s, m=self.m)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the margin logits against ``labels``."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def extra_repr(self) -> str:
        scale = "" if self.loss == "softmax" else f", s={self.s}, m={self.m}"
        return f"loss={self.loss!r}, embedding_dim={self.weight.shape[1]}, num_classes={self.num_classes}{scale}"


def identity_loss(model: nn.Module, output: torch.Tensor, target: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """GFPGAN's identity-preserving loss: ``weight * L1(embed(output), embed(target))``.

    Exactly ``GFPGANModel.optimize_parameters``: both image batches go to gray with ``0.2989 R + 0.5870 G +
    0.1140 B`` and are resized bilinearly (``align_corners=False``) to the network's input size (via
    :func:`resnet_arcface.preprocess`); the target's embedding is computed without a graph (GFPGAN detaches
    it: only the restored image is pushed towards the real one); the loss is the mean absolute difference of
    the *raw* embeddings (not normalised: GFPGAN uses the BatchNorm-ed output of ``bn5`` as it is), times
    ``weight`` (``identity_weight: 10`` in GFPGAN's training options). The only difference is rounding:
    ``preprocess`` maps [-1, 1] onto itself as ``(x + 1) / 2 * 2 - 1``, which can change a value's last bit.

    The network must be in eval mode: in train mode BatchNorm would normalise with the batch's own
    statistics, so one image's loss would depend on the other images in the batch (and Dropout would add
    noise). GFPGAN also freezes it (``requires_grad_(False)``) so the generator's optimizer leaves it alone;
    that is left to the caller, gradients still flow through it to ``output``.

    Args:
        model: The identity network, in eval mode. Its ``input_size`` attribute (default 128) sets the resize.
        output: Restored images in [-1, 1], RGB or gray.
        target: Ground-truth images in [-1, 1], same shape as ``output``.
        weight: Loss weight (GFPGAN: 10).

    Returns:
        A scalar tensor, differentiable with respect to ``output``.

    Shape:
        - output, target: ``(N, 3, H, W)`` or ``(N, 1, H, W)``
        - Output: ``()``
    """
    if model.training:
        raise ValueError("identity_loss needs the identity network in eval mode (call model.eval()): in train mode "
                         "BatchNorm uses batch statistics, so each image's loss would depend on the rest of the batch.")
    if output.shape != target.shape:
        raise ValueError(f"identity_loss: output and target must have the same shape, got {tuple(output.shape)} "
                         f"and {tuple(target.shape)}.")
    size = resolve_cfg(model).input_size
    with torch.no_grad():
        target_embedding = model(preprocess(target, value_range=(-1.0, 1.0), size=size))
    output_embedding = model(preprocess(output, value_range=(-1.0, 1.0), size=size))
    return weight * F.l1_loss(output_embedding, target_embedding)
