"""LFW's protocol as papers report it: a fixed list of pairs, 10-fold accuracy, threshold from the other folds.

Labeled Faces in the Wild (Huang et al. 2007) ships ``pairs.txt``: a header ``folds pairs_per_fold``
(``10 300``), then, fold after fold, ``pairs_per_fold`` genuine lines ``name n1 n2`` (two photos of one
person) and ``pairs_per_fold`` impostor lines ``name1 n1 name2 n2``. Photo ``n`` of ``name`` is the file
``DIR/name/name_%04d.jpg``. For each fold, the threshold that maximises accuracy on the *other* nine folds is
applied to it; the mean of the ten accuracies and their standard deviation are the numbers papers quote
("99.83 % on LFW"). InsightFace's ``eval/verification.py`` does the same for LFW, CFP-FP and AgeDB-30, with
*flip test-time augmentation*: the embedding of an image is the sum of the network's output for it and for
its mirror image, normalised afterwards (:class:`FlipSum`).

How it differs from the all-pairs protocol of :mod:`resnet_arcface.eval.verify`, and when to use which:

- **Pairs** (this module): a few thousand chosen pairs, half of them genuine, and one number, accuracy at a
  threshold tuned on held-out folds. Use it to compare with published LFW-style results, on the published
  pair lists. Its impostor pairs are few and mostly easy, so it cannot tell apart networks that both pass
  99 %, and it says nothing about rare false accepts.
- **All pairs** (:func:`~resnet_arcface.eval.verify.evaluate_embeddings`): every pair of a held-out set, so
  millions of impostor pairs, and the TAR at a FAR you could deploy at (1e-3 and below), as IJB-B/C report
  it. Use it for your own data, to choose a threshold for an application, and whenever the pair list is not
  fixed by a benchmark.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.folders import IMAGE_SUFFIXES, load_face
from .readout import FlipSum
from .verify import embed, require_finite, roc


@dataclass
class PairList:
    """The pairs of an LFW-style pairs file.

    Attributes:
        images: ``(name, number)`` of every distinct photo the pairs use, in order of first use.
        index: For each pair, the positions of its two photos in ``images``.
        same: Whether each pair is genuine.
        fold: Fold of each pair (0 to ``folds - 1``).

    Shape:
        - index: ``(P, 2)``; same, fold: ``(P,)``
    """

    images: List[Tuple[str, int]]
    index: torch.Tensor
    same: torch.Tensor
    fold: torch.Tensor

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1


def read_pairs(path: Path) -> PairList:
    """Read an LFW-style pairs file (see the module docstring for the format).

    Fields may be separated by tabs or spaces; blank lines are skipped. The pairs of fold ``f`` are lines
    ``2 f p`` to ``2 (f + 1) p - 1`` after the header, ``p`` pairs per fold of each kind, so a fold is the
    block of lines that ``pairs.txt`` gives it.

    Raises:
        ValueError: naming the file and line, for a missing file, a bad header, a line that is neither form,
            or a number of lines that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--pairs {path}: no such file; give an LFW-style pairs file (e.g. LFW's pairs.txt).")
    lines = [(no, line.split()) for no, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    if not lines:
        raise ValueError(f"--pairs {path}: the file is empty; expected a header 'folds pairs_per_fold' "
                         f"(e.g. '10 300').")
    header = lines[0][1]
    try:
        folds, per_fold = (int(v) for v in header)
        if folds < 2 or per_fold < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--pairs {path}: line {lines[0][0]} is {' '.join(header)!r}; expected the header "
                         f"'folds pairs_per_fold' with at least 2 folds (LFW's is '10 300').") from None
    body = lines[1:]
    if len(body) != 2 * folds * per_fold:
        raise ValueError(f"--pairs {path}: the header promises {folds} folds x {per_fold} genuine and {per_fold} "
                         f"impostor pairs = {2 * folds * per_fold} lines, but {len(body)} follow it.")
    images: Dict[Tuple[str, int], int] = {}
    index, same = [], []
    for no, fields in body:
        try:
            if len(fields) == 3:
                a, b = (fields[0], int(fields[1])), (fields[0], int(fields[2]))
            elif len(fields) == 4:
                a, b = (fields[0], int(fields[1])), (fields[2], int(fields[3]))
            else:
                raise ValueError
            if a[1] < 1 or b[1] < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"--pairs {path}: line {no} is {' '.join(fields)!r}; expected 'name n1 n2' (genuine) "
                             f"or 'name1 n1 name2 n2' (impostor), photo numbers from 1.") from None
        index.append([images.setdefault(a, len(images)), images.setdefault(b, len(images))])
        same.append(a[0] == b[0])
    fold = torch.arange(folds).repeat_interleave(2 * per_fold)
    return PairList(list(images), torch.tensor(index), torch.tensor(same), fold)


def image_path(root: Path, name: str, number: int) -> Path:
    """The file of photo ``number`` of ``name``: ``root/name/name_%04d`` with an image suffix (``.jpg`` first)."""
    stem = Path(root) / name / f"{name}_{number:04d}"
    for suffix in [".jpg"] + sorted(IMAGE_SUFFIXES - {".jpg"}):
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    raise ValueError(f"--data: no image {stem}.jpg (nor another image suffix) for photo {number} of {name}; "
                     f"the pairs file expects DIR/name/name_%04d.jpg, as LFW is laid out.")


def read_pair_images(root: Path, pairs: PairList, size: int) -> torch.Tensor:
    """Every photo the pairs use, decoded as the folder reader does (:func:`~resnet_arcface.data.load_face`:
    gray, resized to ``size`` as :func:`~resnet_arcface.preprocess` does), in [0, 1].

    Shape:
        - Output: ``(len(pairs.images), 1, size, size)``
    """
    if not Path(root).is_dir():
        raise ValueError(f"--data {root}: no such folder; give the folder of DIR/name/name_%04d.jpg photos.")
    return torch.stack([load_face(image_path(root, name, number), size).float() / 255
                        for name, number in pairs.images])


def pair_cosines(embeddings: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Cosine score of each listed pair ``(index[p, 0], index[p, 1])`` of rows of ``embeddings``.

    Shape:
        - embeddings: ``(M, D)``; index: ``(P, 2)``; Output: ``(P,)``
    """
    require_finite(embeddings, "pair_cosines: embeddings")
    e = F.normalize(embeddings.float(), dim=1)
    return (e[index[:, 0]] * e[index[:, 1]]).sum(dim=1)


def kfold_accuracy(scores: torch.Tensor, same: torch.Tensor, fold: torch.Tensor) -> Dict[str, object]:
    """Accuracy of each fold at the threshold that maximises accuracy on all the other folds.

    The threshold is one of the other folds' scores (accept ``score >= threshold``), the highest of those
    that tie for the best accuracy there; it is then applied, unchanged, to the fold. No fold sees its own
    pairs while its threshold is chosen, so the mean is an honest estimate for a threshold set in advance.

    Args:
        scores: Pair scores (higher means more alike).
        same: Whether each pair is genuine.
        fold: Fold of each pair, 0 to ``K - 1``, ``K >= 2``.

    Returns:
        ``{"accuracy": mean, "std": population standard deviation (as InsightFace and papers report it),
        "fold_accuracies": [K floats], "thresholds": [K floats]}``.

    Shape:
        - scores, same, fold: ``(P,)``
    """
    if not scores.shape == same.shape == fold.shape or scores.dim() != 1:
        raise ValueError(f"kfold_accuracy expects scores, same and fold of one 1-D shape, got {tuple(scores.shape)}, "
                         f"{tuple(same.shape)} and {tuple(fold.shape)}.")
    folds = int(fold.max()) + 1 if len(fold) else 0
    if folds < 2:
        raise ValueError(f"kfold_accuracy needs at least 2 folds, got {folds}.")
    same = same.bool()
    accuracies, thresholds = [], []
    for k in range(folds):
        train, test = fold != k, fold == k
        far, tar, candidates = roc(scores[train], same[train])
        genuine = int(same[train].sum())
        correct = tar * genuine + (1 - far) * (int(train.sum()) - genuine)  # accepted genuine + rejected impostor
        threshold = float(candidates[int(torch.argmax(correct))])  # the first maximum: the highest threshold
        accuracies.append(float(((scores[test] >= threshold) == same[test]).double().mean()))
        thresholds.append(threshold)
    acc = torch.tensor(accuracies, dtype=torch.float64)
    return {"accuracy": float(acc.mean()), "std": float(acc.std(unbiased=False)), "fold_accuracies": accuracies,
            "thresholds": thresholds}


def evaluate_pairs(model: nn.Module, images: torch.Tensor, pairs: PairList, flip: bool = False,
                   batch_size: int = 256) -> Dict[str, object]:
    """LFW-protocol verification of ``model``: embed every photo once, score the listed pairs, 10-fold accuracy.

    Args:
        model: The embedding network (its mode is restored afterwards).
        images: The photos of :func:`read_pair_images`, in [0, 1].
        pairs: The pairs, from :func:`read_pairs`.
        flip: Flip test-time augmentation (:class:`FlipSum`).
        batch_size: Images per forward pass.

    Returns:
        The dict of :func:`kfold_accuracy`.

    Shape:
        - images: ``(M, C, H, W)``, ``M = len(pairs.images)``
    """
    embeddings = embed(FlipSum(model) if flip else model, images, batch_size)
    return kfold_accuracy(pair_cosines(embeddings, pairs.index), pairs.same, pairs.fold)
