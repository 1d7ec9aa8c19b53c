"""Open-set face verification: is this pair of images the same person?

Face recognition is measured on identities the network never saw in training (*open set*): a classifier
over training identities cannot answer for a stranger, only the embedding can. Every pair of held-out
images gets a score, the cosine of their embeddings; a threshold turns scores into "same" / "different".
Accepting an impostor pair is a *false accept*; accepting a genuine pair a *true accept*. Sweeping the
threshold traces the ROC: the true accept rate (TAR) against the false accept rate (FAR). Deployed systems
fix the FAR they can afford (1 in 100, 1 in 1000) and report the TAR there.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import transform_for
from ..device import model_device

#: False accept rates at which :func:`evaluate` reports the true accept rate.
FARS = (1e-2, 1e-3)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
    """Embeddings of ``images``, computed in eval mode without a graph, on the model's device.

    The images are fed through the model's transform (:func:`resnet_arcface.transform_for`: gray, resized
    to ``model.input_size``, mapped to [-1, 1], as :func:`resnet_arcface.preprocess` does), so they are given
    as a data set holds them. By default the rows come back at unit L2 norm, because verification compares
    directions only (the cosine); ``normalize=False`` returns the embeddings as the network computes them,
    ``model(transform(images))`` (GFPGAN's identity loss uses those). The model's train/eval mode is
    restored afterwards.

    Args:
        model: The embedding network.
        images: Images in [0, 1], RGB or gray, any size.
        batch_size: Images per forward pass (memory, not results, depends on it).
        normalize: Return unit-norm rows (default), or the raw embeddings.

    Returns:
        float32 embeddings on the CPU.

    Shape:
        - images: ``(N, C, H, W)``, ``C`` in {1, 3}
        - Output: ``(N, D)``
    """
    if batch_size < 1:
        raise ValueError(f"embed: batch_size must be a positive int, got {batch_size}.")
    device, transform = model_device(model), transform_for(model)
    was_training = model.training
    model.eval()
    try:
        out = [model(transform(images[i:i + batch_size].to(device))).float().cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    out = torch.cat(out)
    return F.normalize(out, dim=1) if normalize else out


def pair_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine score and same-identity flag of every unordered pair ``i < j``.

    Args:
        embeddings: One row per image (normalised here, so raw pixels flattened to rows work too).
        labels: Identity of each row.

    Returns:
        ``(scores, same)``: cosine similarities (float32) and booleans, in ``torch.triu_indices`` order.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
        - Output: two tensors of shape ``(N (N - 1) / 2,)``
    """
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(f"pair_scores expects embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}. Flatten images with x.flatten(1) first.")
    e = F.normalize(embeddings.float(), dim=1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    gram = e @ e.t()  # (N, N): N^2 floats, far fewer than gathering two (P, D) copies of the rows
    return gram[i, j], labels[i] == labels[j]


def roc(scores: torch.Tensor, same: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ROC of "accept when score >= threshold", at every distinct score.

    Tied scores are accepted or rejected together, so each distinct score is one point; the first point is
    ``threshold = +inf`` (accept nothing: FAR = TAR = 0), the last is the lowest score (accept everything:
    FAR = TAR = 1).

    Args:
        scores: Pair scores (higher means more alike).
        same: Whether each pair is genuine (same identity).

    Returns:
        ``(far, tar, thresholds)``, float64, FAR and TAR non-decreasing as the threshold decreases.

    Shape:
        - scores, same: ``(P,)``
        - Output: three tensors of shape ``(K + 1,)``, ``K`` the number of distinct scores
    """
    if scores.shape != same.shape or scores.dim() != 1:
        raise ValueError(f"roc expects scores and same of the same 1-D shape, got {tuple(scores.shape)} and "
                         f"{tuple(same.shape)}.")
    same = same.bool()
    genuine, impostor = int(same.sum()), int((~same).sum())
    if genuine == 0 or impostor == 0:
        raise ValueError(f"roc needs both genuine and impostor pairs, got {genuine} genuine and {impostor} impostor. "
                         f"Evaluate at least two identities, one of them with two or more images.")
    order = torch.argsort(scores.double(), descending=True)
    s, g = scores.double()[order], same[order].double()
    last = torch.ones_like(s, dtype=torch.bool)  # the last pair of each run of tied scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = torch.cumsum(g, 0)[last], torch.cumsum(1 - g, 0)[last]
    zero = torch.zeros(1, dtype=torch.float64)
    return (torch.cat([zero, fp / impostor]), torch.cat([zero, tp / genuine]),
            torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), s[last]]))


def _at_far(far: torch.Tensor, tar: torch.Tensor, thresholds: torch.Tensor, target: float) -> Tuple[float, float]:
    """``(tar, threshold)`` of the last ROC point whose measured FAR is at most ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"far must be a rate in (0, 1], e.g. 1e-3, got {target}.")
    k = int(torch.nonzero(far <= target).max())  # FAR is non-decreasing, and far[0] = 0 always qualifies
    return float(tar[k]), float(thresholds[k])


def tar_at_far(scores: torch.Tensor, same: torch.Tensor, far: float) -> float:
    """True accept rate at the lowest threshold whose *measured* FAR is at most ``far``.

    No interpolation between ROC points: the rate is one that a real threshold achieves on these pairs,
    and never one bought by exceeding the FAR. Tied scores move together (see :func:`roc`). With fewer than
    ``1 / far`` impostor pairs the only such threshold may be the one with zero false accepts: have at
    least ``10 / far`` impostor pairs for a stable number.

    Args:
        scores: Pair scores (see :func:`pair_scores`).
        same: Whether each pair is genuine.
        far: The false accept rate allowed, in (0, 1].

    Shape:
        - scores, same: ``(P,)``
    """
    return _at_far(*roc(scores, same), far)[0]


def evaluate_embeddings(embeddings: torch.Tensor, labels: torch.Tensor) -> Dict[str, object]:
    """Open-set verification over every pair of ``embeddings``: AUC, TAR at fixed FARs, best accuracy.

    Use it for any representation, e.g. raw pixels (``images.flatten(1)``) as the baseline a trained
    network must beat. The identities should be ones the network never trained on.

    Returns:
        ``{"auc": float, "tar_at_far": {1e-2: float, 1e-3: float}, "threshold": float, "accuracy": float}``.
        ``auc`` is the area under the ROC (trapezoids: a tie counts half, as in the Mann-Whitney statistic).
        ``accuracy`` is the *balanced* verification accuracy ``(TAR + 1 - FAR) / 2`` at the threshold
        ``threshold`` that maximises it: the accuracy on a set with as many genuine as impostor pairs, as in
        LFW's protocol (all pairs here are mostly impostors, so the plain accuracy would flatter any model).
        The threshold is chosen on these same pairs, so the accuracy is an optimistic, best-case figure.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
    """
    far, tar, thresholds = roc(*pair_scores(embeddings, labels))
    balanced = (tar + 1 - far) / 2
    best = int(torch.argmax(balanced))
    auc = float(torch.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))
    return {"auc": auc, "tar_at_far": {f: _at_far(far, tar, thresholds, f)[0] for f in FARS},
            "threshold": float(thresholds[best]), "accuracy": float(balanced[best])}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> Dict[str, object]:
    """Open-set verification of ``model`` on held-out identities (see :func:`evaluate_embeddings`).

    Args:
        model: The embedding network (its mode is restored afterwards).
        images: Images in [0, 1] of identities *not* used in training (see :func:`embed`).
        labels: Identity of each image.
        batch_size: Images per forward pass.

    Shape:
        - images: ``(N, C, H, W)``; labels: ``(N,)``
    """
    return evaluate_embeddings(embed(model, images, batch_size), labels)
