"""Verification of many faces in bounded memory: every pair scored in blocks, into a histogram of scores.

:func:`~resnet_arcface.eval.verify.pair_scores` holds every pair at once: an ``N x N`` Gram matrix and
``N (N - 1) / 2`` index pairs, about 3 GB at N = 10,000 and 60 GB at N = 50,000. Here the Gram matrix is
computed a block of rows at a time, only its upper triangle (each unordered pair once), and each block's
scores are counted into two fixed histograms over [-1, 1], one for genuine pairs (same identity) and one
for impostor pairs, before the next block is computed. Memory is the embeddings (and a sorted copy), one
block (16 M scores, 64 MB) and the two histograms (65,536 bins, 1 MB); time is half an ``N x N`` matrix
product plus one pass that bins each score. Measured on one CPU thread (``benchmarks/verification.md``):
N = 50,000 in a 467 MB process (128-d) where the exact ROC would need about 91 GB, in 1.2 to 1.5 times the
time of the bare ``N x N`` product.

What the histogram keeps, and what it loses:

- At a threshold on a bin edge, the counts of genuine and impostor pairs at or above it are *exact*, so
  every point of :meth:`PairHistogram.roc` is a point of the exact ROC (a score's bin is computed in
  float32, so a score within one rounding, about 1e-7, of an edge may fall on either side of it).
- Between edges the ROC is unknown, so the numbers read from it are bounded, not exact; the bounds are
  computed from the histograms themselves by :meth:`PairHistogram.error_bounds`:

  - TAR at FAR <= f: the answer is what the lowest *edge* with measured FAR <= f achieves, never above the
    exact answer and below it by at most the genuine pairs in the one bin under that edge;
  - the best balanced accuracy: never above the exact value, below it by at most half the smaller of the
    genuine and impostor shares of one bin;
  - the AUC: pairs of a genuine and an impostor score in the same bin count half, as a tie would, so it is
    within half the share of such (genuine, impostor) pairs of the exact value.

With 65,536 bins (width 3.1e-5) these bounds stay below the sampling error of the data sets that need the
histogram: at N = 50,000 embeddings of 5,000 identities (AUC 0.984, TAR 0.47 at FAR 1e-3) they were 2.7e-4
for that TAR (a quarter of its binomial standard error, 1.1e-3) and 1e-5 for the AUC.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from .verify import FARS, at_far_index, require_finite

#: Bins of the score histograms over [-1, 1]: width 2 / 65,536 = 3.1e-5. Each bin is visited in cache (a
#: 256 KB float32 histogram), which makes binning 2 to 3 times faster than with 2 ** 20 bins.
DEFAULT_BINS = 2 ** 16
#: Scores per block: 16 M float32, 64 MB. Larger blocks gain nothing (the matrix product is already at full
#: speed), and the float32 histogram of one block stays exact (counts up to 2 ** 24 are exact in float32).
BLOCK_SCORES = 2 ** 24
_OUT = 3.0  # a value outside [-1, 1]: torch.histc ignores it, so marked scores are not counted


@dataclass
class PairHistogram:
    """Counts of genuine and impostor pair scores in equal bins over [-1, 1].

    Bin ``k`` holds the scores ``s`` with ``k = floor((s + 1) * bins / 2)`` (a score of exactly 1 goes in the
    last bin), i.e. ``edges[k] <= s < edges[k + 1]``.

    Attributes:
        genuine: Pairs of the same identity in each bin (int64).
        impostor: Pairs of different identities in each bin (int64).

    Shape:
        - genuine, impostor: ``(bins,)``
    """

    genuine: torch.Tensor
    impostor: torch.Tensor

    @property
    def edges(self) -> torch.Tensor:
        """The ``bins + 1`` bin edges, from -1 to 1 (float64)."""
        return torch.linspace(-1.0, 1.0, len(self.genuine) + 1, dtype=torch.float64)

    def roc(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ROC of "accept when score >= threshold" at the lower edge of every non-empty bin.

        Same form as :func:`resnet_arcface.eval.verify.roc`, so the same readers apply: the first point is
        ``threshold = +inf`` (FAR = TAR = 0), the last accepts every pair (FAR = TAR = 1). Each point is exact
        (see the module docstring); the points between edges are missing.

        Returns:
            ``(far, tar, thresholds)``, float64.

        Shape:
            - Output: three tensors of shape ``(K + 1,)``, ``K`` the number of non-empty bins
        """
        genuine, impostor = int(self.genuine.sum()), int(self.impostor.sum())
        if genuine == 0 or impostor == 0:
            raise ValueError(f"roc needs both genuine and impostor pairs, got {genuine} genuine and {impostor} "
                             f"impostor. Evaluate at least two identities, one of them with two or more images.")
        used = torch.nonzero(self.genuine + self.impostor).flatten().flip(0)  # non-empty bins, highest first
        tp = torch.cumsum(self.genuine[used], 0).double()
        fp = torch.cumsum(self.impostor[used], 0).double()
        zero = torch.zeros(1, dtype=torch.float64)
        return (torch.cat([zero, fp / impostor]), torch.cat([zero, tp / genuine]),
                torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), self.edges[used]]))

    def error_bounds(self, fars: Tuple[float, ...] = FARS) -> Dict[str, object]:
        """How far the numbers read from :meth:`roc` can be from those of the exact ROC of the same pairs.

        Returns:
            ``{"auc": a, "tar_at_far": {f: t}, "accuracy": c}``: the exact AUC is within ``a`` of the
            histogram's, the exact TAR at FAR <= f is in ``[tar, tar + t]`` and the exact best balanced
            accuracy in ``[accuracy, accuracy + c]`` (the histogram's values as
            :func:`~resnet_arcface.eval.verify.summarize_roc` reads them).
        """
        far, tar, _ = self.roc()
        g = self.genuine.double() / self.genuine.sum()
        i = self.impostor.double() / self.impostor.sum()
        tar_bounds = {}
        for f in fars:
            # The exact threshold lies between the chosen edge and the next lower point of the ROC, so the
            # exact TAR exceeds the chosen one by at most the genuine pairs between them.
            k = at_far_index(far, f)
            tar_bounds[f] = float(tar[k + 1] - tar[k]) if k + 1 < len(tar) else 0.0
        # Within one bin, the balanced accuracy can rise above its value at the upper edge by at most half
        # the bin's genuine share, and above its value at the lower edge by at most half its impostor share.
        accuracy = float(torch.max(torch.minimum(g, i)) / 2)
        return {"auc": float(torch.sum(g * i) / 2), "tar_at_far": tar_bounds, "accuracy": accuracy}


def pair_histogram(embeddings: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS,
                   block_scores: int = BLOCK_SCORES) -> PairHistogram:
    """Histograms of the cosine scores of every unordered pair ``i < j``, genuine and impostor apart.

    The rows are sorted by identity first, so the genuine pairs of a block of rows lie in a narrow band of
    columns next to the diagonal, and only that band is compared label by label. The product runs where
    ``embeddings`` are (a CUDA tensor is scored on the GPU, with the same bounded memory there).

    Args:
        embeddings: One row per image (normalised here, as by :func:`~resnet_arcface.eval.verify.pair_scores`).
        labels: Identity of each row.
        bins: Number of equal bins over [-1, 1].
        block_scores: Scores computed at once, at most :data:`BLOCK_SCORES` (a block has
            ``max(1, block_scores // N)`` rows); memory, not results, depends on it.

    Returns:
        The :class:`PairHistogram` of the ``N (N - 1) / 2`` pairs.

    Raises:
        ValueError: on mismatched shapes, a non-finite embedding, or a non-positive ``bins``/``block_scores``.

    Shape:
        - embeddings: ``(N, D)``; labels: ``(N,)``
    """
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(f"pair_histogram expects embeddings (N, D) and labels (N,), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}. Flatten images with x.flatten(1).")
    if bins < 1 or block_scores < 1:
        raise ValueError(f"pair_histogram: bins and block_scores must be positive ints, got {bins} and "
                         f"{block_scores}.")
    require_finite(embeddings, "pair_histogram: embeddings")
    n, device = len(embeddings), embeddings.device
    order = torch.argsort(labels, stable=True).to(device)
    e = F.normalize(embeddings.float()[order], dim=1)
    lab = labels.to(device)[order]
    # Row i's identity ends before column group_end[i] (labels are sorted), so the genuine pairs of rows
    # r0..r1 lie in columns r0..group_end[r1 - 1].
    group_end = torch.searchsorted(lab, lab, right=True).cpu()
    genuine = torch.zeros(bins, dtype=torch.int64, device=device)
    impostor = torch.zeros(bins, dtype=torch.int64, device=device)
    rows = max(1, min(block_scores, BLOCK_SCORES) // max(n, 1))  # <= 2 ** 24 scores: exact float32 counts
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        s = (e[r0:r1] @ e[r0:].t()).clamp_(-1.0, 1.0)  # (r1 - r0, n - r0): |cos| can exceed 1 by a rounding
        # Each unordered pair once: in the diagonal block keep only columns j > i.
        s[:, :r1 - r0].masked_fill_(torch.ones(r1 - r0, r1 - r0, dtype=torch.bool, device=device).tril(), _OUT)
        band = s[:, :int(group_end[r1 - 1]) - r0]
        same = lab[r0:r1, None] == lab[None, r0:r0 + band.shape[1]]
        genuine += torch.histc(band[same], bins, -1.0, 1.0).long()  # marked (_OUT) scores are not counted
        band.masked_fill_(same, _OUT)
        impostor += torch.histc(s, bins, -1.0, 1.0).long()
    return PairHistogram(genuine.cpu(), impostor.cpu())
