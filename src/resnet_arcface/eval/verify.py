"""Open-set face verification: is this pair of images the same person?

Face recognition is measured on identities the network never saw in training (*open set*): a classifier
over training identities cannot answer for a stranger, only the embedding can. Every pair of held-out
images gets a score, the cosine of their embeddings; a threshold turns scores into "same" / "different".
Accepting an impostor pair is a *false accept*; accepting a genuine pair a *true accept*. Sweeping the
threshold traces the ROC: the true accept rate (TAR) against the false accept rate (FAR). Deployed systems
fix the FAR they can afford (1 in 100, 1 in 1000) and report the TAR there.

Two protocols use these pieces. This module's *all-pairs* protocol scores every pair of a held-out set and
reports the ROC's TAR at fixed FARs: the open-set measure IJB-B/C report, and the one to use for your own
data. :mod:`resnet_arcface.eval.pairs_protocol` runs LFW's fixed list of pairs with 10-fold accuracy, the
number papers quote for LFW. Above :data:`EXACT_MAX_PAIRS` pairs, :func:`evaluate_embeddings` scores the pairs
in blocks into a fine histogram (:mod:`resnet_arcface.eval.chunked`), so 50,000 faces fit in memory.

Non-finite embeddings or scores (NaN, inf) are refused with a :class:`ValueError`: sorting puts NaN first, so
NaN pairs would count as accepted and give believable but wrong rates.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import transform_for
from ..device import model_device

#: False accept rates at which :func:`evaluate` reports the true accept rate.
FARS = (1e-2, 1e-3)
#: Above this many pairs (N = 2,896 embeddings) :func:`evaluate_embeddings` switches from the exact ROC
#: (every score sorted: about 75 bytes a pair at peak, 0.3 GB at this size, measured in
#: ``benchmarks/verification.md``) to the blocked histogram of :func:`resnet_arcface.eval.chunked.pair_histogram`,
#: whose memory does not grow with the number of pairs.
EXACT_MAX_PAIRS = 2 ** 22


def require_finite(values: torch.Tensor, what: str) -> None:
    """Raise a :class:`ValueError` naming ``what`` if ``values`` holds a NaN or an infinity.

    Verification must refuse them: sorting puts NaN first, so a NaN score would count as accepted at every
    threshold and the ROC would look plausible. Rows (dimension 0) are counted, so the message says how many
    embeddings or scores are affected and where the first is.
    """
    bad = ~torch.isfinite(values)
    if bad.any():
        rows = bad.reshape(len(values), -1).any(dim=1) if values.dim() > 1 else bad
        kind = "rows" if values.dim() > 1 else "values"
        raise ValueError(f"{what}: {int(rows.sum())} of {len(values)} {kind} are not finite (NaN or inf; the "
                         f"first at index {int(torch.nonzero(rows)[0])}); verification needs finite values. Check "
                         f"the images for NaN and the network for divergence (a NaN loss in training).")


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

    It builds the whole ``N x N`` Gram matrix and ``N (N - 1) / 2`` index pairs (about 3 GB at N = 10,000):
    for large ``N`` use :func:`resnet_arcface.eval.chunked.pair_histogram`, which :func:`evaluate_embeddings`
    switches to by itself.

    Args:
        embeddings: One row per image (normalised here, so raw pixels flattened to rows work too).
        labels: Identity of each row.

    Returns:
        ``(scores, same)``: cosine similarities (float32) and booleans, in ``torch.triu_indices`` order.

    Raises:
        ValueError: on shapes that do not match, or a non-finite embedding.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
        - Output: two tensors of shape ``(N (N - 1) / 2,)``
    """
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(f"pair_scores expects embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}. Flatten images with x.flatten(1) first.")
    require_finite(embeddings, "pair_scores: embeddings")
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

    Raises:
        ValueError: on mismatched shapes, a non-finite score, or a set without genuine or impostor pairs.

    Shape:
        - scores, same: ``(P,)``
        - Output: three tensors of shape ``(K + 1,)``, ``K`` the number of distinct scores
    """
    if scores.shape != same.shape or scores.dim() != 1:
        raise ValueError(f"roc expects scores and same of the same 1-D shape, got {tuple(scores.shape)} and "
                         f"{tuple(same.shape)}.")
    require_finite(scores, "roc: scores")
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


def at_far_index(far: torch.Tensor, target: float) -> int:
    """Index of the last ROC point (lowest threshold) whose measured FAR is at most ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"far must be a rate in (0, 1], e.g. 1e-3, got {target}.")
    return int(torch.nonzero(far <= target).max())  # FAR is non-decreasing, and far[0] = 0 always qualifies


def _at_far(far: torch.Tensor, tar: torch.Tensor, thresholds: torch.Tensor, target: float) -> Tuple[float, float]:
    """``(tar, threshold)`` of the last ROC point whose measured FAR is at most ``target``."""
    k = at_far_index(far, target)
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


def roc_auc(far: torch.Tensor, tar: torch.Tensor) -> float:
    """Area under an ROC from :func:`roc`, by trapezoids.

    On the exact ROC this is the Mann-Whitney statistic: the probability that a random genuine pair scores
    above a random impostor pair, a tie counting half (a run of tied scores is one straight segment).

    Shape:
        - far, tar: ``(K,)``, FAR and TAR non-decreasing
    """
    return float(torch.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))


def summarize_roc(far: torch.Tensor, tar: torch.Tensor, thresholds: torch.Tensor) -> Dict[str, object]:
    """The numbers :func:`evaluate_embeddings` reports, read off one ROC (exact, or a histogram's).

    Returns:
        ``{"auc", "tar_at_far": {far: tar for far in FARS}, "threshold", "accuracy"}``, as documented in
        :func:`evaluate_embeddings`.
    """
    balanced = (tar + 1 - far) / 2
    best = int(torch.argmax(balanced))
    return {"auc": roc_auc(far, tar), "tar_at_far": {f: _at_far(far, tar, thresholds, f)[0] for f in FARS},
            "threshold": float(thresholds[best]), "accuracy": float(balanced[best])}


def evaluate_embeddings(embeddings: torch.Tensor, labels: torch.Tensor, *,
                        exact: Optional[bool] = None) -> Dict[str, object]:
    """Open-set verification over every pair of ``embeddings``: AUC, TAR at fixed FARs, best accuracy.

    Use it for any representation, e.g. raw pixels (:func:`pixel_baseline`) as the baseline a trained
    network must beat. The identities should be ones the network never trained on.

    Up to :data:`EXACT_MAX_PAIRS` pairs (N = 2,896 embeddings) the ROC is exact: every score is sorted. Above
    it the pairs are scored in blocks into a histogram of 65,536 bins over [-1, 1]
    (:func:`resnet_arcface.eval.chunked.pair_histogram`), in memory that does not grow with the number of
    pairs: about 150 MB besides the embeddings, at any N. Its rates are then exact at thresholds on the
    bin edges (every 3.1e-5): ``tar_at_far`` and ``accuracy`` are what a real threshold achieves, never
    above the exact values and below them by at most the share of genuine pairs in one bin (half that for
    the accuracy); the AUC is within half the share of (genuine, impostor) pairs that fall in a common bin.
    :meth:`~resnet_arcface.eval.chunked.PairHistogram.error_bounds` gives those bounds for a data set.

    Args:
        embeddings: One row per image (normalised here).
        labels: Identity of each row.
        exact: ``True`` forces the exact ROC, ``False`` the histogram; ``None`` (default) chooses by size.

    Returns:
        ``{"auc": float, "tar_at_far": {1e-2: float, 1e-3: float}, "threshold": float, "accuracy": float}``.
        ``auc`` is the area under the ROC (trapezoids: a tie counts half, as in the Mann-Whitney statistic).
        ``tar_at_far[f]`` is the TAR at the lowest threshold whose measured FAR is at most ``f``
        (see :func:`tar_at_far`).
        ``accuracy`` is the *balanced* verification accuracy ``(TAR + 1 - FAR) / 2`` at the threshold
        ``threshold`` that maximises it: the accuracy on a set with as many genuine as impostor pairs, as in
        LFW's protocol (all pairs here are mostly impostors, so the plain accuracy would flatter any model).
        The threshold is chosen on these same pairs, so the accuracy is an optimistic, best-case figure; for
        a threshold chosen on other folds, see :mod:`resnet_arcface.eval.pairs_protocol`.

    Raises:
        ValueError: on a non-finite embedding, or a set without genuine or impostor pairs.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
    """
    n = len(embeddings)
    if exact is None:
        exact = n * (n - 1) // 2 <= EXACT_MAX_PAIRS
    if exact:
        return summarize_roc(*roc(*pair_scores(embeddings, labels)))
    from .chunked import pair_histogram  # chunked builds on this module's checks

    return summarize_roc(*pair_histogram(embeddings, labels).roc())


def pixel_baseline(images: torch.Tensor, labels: torch.Tensor) -> Dict[str, object]:
    """Verification with raw pixels as embeddings: the floor a trained network must beat.

    Each image, flattened, is one embedding, so two photos match when their pixels point the same way.
    A network that does not beat this has learnt nothing about identity.

    Args:
        images: The held-out images, as given to :func:`evaluate` (any range; only directions count).
        labels: Identity of each image.

    Returns:
        The dict of :func:`evaluate_embeddings`.

    Shape:
        - images: ``(N, C, H, W)``; labels: ``(N,)``
    """
    return evaluate_embeddings(images.flatten(1), labels)


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
