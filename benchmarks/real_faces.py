"""Open-set verification on real faces: the 40 people of the AT&T (Olivetti) faces, identities held out.

Each *split* shuffles the 40 people with its own seed and gives the first 20 to every fitted step (PCA, LDA,
fine-tuning, training from scratch); the other 20 are only ever scored, over every pair of their 200 photos
(900 genuine and 19,000 impostor pairs). Methods:

- ``pixels``: cosine of the photos themselves, downsampled to 32 px (what the network sees).
- ``eigenfaces``: PCA (50 components) fitted on the training identities [Turk and Pentland 1991].
- ``fisherfaces``: PCA (100) + LDA fitted on the training identities [Belhumeur et al. 1997].
- ``shipped``: ``pretrained("synthetic")`` as it is, trained on synthetic identities only.
- ``frozen + LDA head``: the shipped network frozen, a new *linear* head (LDA) fitted on its embeddings of the
  training identities; the embedding is the head's output.
- ``scratch``, ``fine-tune``: :func:`resnet_arcface.fit` on the training identities from random weights, or from
  the shipped ones with ``learn.config.FINETUNE`` (what ``arcface-train --init synthetic`` uses), each with the
  named augmentation (``resnet_arcface.data.augment``).
- ``... + LDA head``: the same network, then LDA fitted on its embeddings of the training identities.
- ``... re-initialised``: fine-tuning after drawing the named stages' weights afresh (``fc5`` and ``bn5``, the
  embedding layer; or also ``layer4`` and ``bn4``), the stages that specialised on synthetic identities.
- ``... layer-3 map`` (``layer-2 map``): the same network's ``layer3`` (``layer2``) output, flattened (1,024
  (2,048) numbers at 32 px), compared by cosine: :class:`resnet_arcface.eval.StageFeatures`, what
  ``arcface-verify --features layer3`` compares.
- ``... + mirror``: the features of each photo plus those of its mirror image (flip test-time augmentation,
  :class:`resnet_arcface.eval.FlipSum`, ``arcface-verify --flip``).

Choices (epochs, augmentation, frozen stages, learning rates, the LDA head, re-initialised stages) were made on
validation identities only, as ``--protocol val`` does, which never looks at the held-out 20: it splits each
split's 20 training identities again, 14 to fit and 6 to score. ``--protocol test`` (the default) is the table of ``benchmarks/real_faces.md``.

    SCIKIT_LEARN_DATA=... python benchmarks/real_faces.py --threads 1          # the table (about 15 min, 1 thread)
    python benchmarks/real_faces.py --protocol val --methods fine-tune ...    # the choices
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from resnet_arcface import __version__, fit, pretrained, resnet_arcface_small
from resnet_arcface.data import olivetti_faces
from resnet_arcface.eval import FlipSum, StageFeatures
from resnet_arcface.eval.verify import embed, evaluate_embeddings
from resnet_arcface.learn.config import FINETUNE

#: Identities given to the fitted steps per split (the rest are held out), and with ``--protocol val`` the
#: training identities fitted (the rest of the training identities score the choice).
TRAIN_IDENTITIES, VAL_FIT_IDENTITIES = 20, 14
#: The recipe trained on the training identities; ``FINETUNE`` is added when starting from the shipped weights.
RECIPE: Dict[str, Any] = dict(epochs=40, augment="faces")

Features = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], np.ndarray]


def downsample(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Area-like bilinear downsampling (antialiased), as a camera at a lower resolution would see the face."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def lda_head(train_features: np.ndarray, train_labels: torch.Tensor, features: np.ndarray) -> np.ndarray:
    """Fit LDA on the training identities' features and project ``features`` (at most C - 1 dimensions).

    Shrinkage (Ledoit-Wolf, chosen analytically) keeps the within-class covariance invertible when the features
    outnumber the photos per identity, as they do here (128-d embeddings, 10 photos a person).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    return lda.fit(np.asarray(train_features), train_labels.numpy()).transform(np.asarray(features))


def pixels(x_fit: torch.Tensor, y_fit: torch.Tensor, x_score: torch.Tensor, seed: int) -> np.ndarray:
    return downsample(x_score).flatten(1).numpy()


def eigenfaces(x_fit: torch.Tensor, y_fit: torch.Tensor, x_score: torch.Tensor, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(50, random_state=0).fit(x_fit.flatten(1).numpy()).transform(x_score.flatten(1).numpy())


def fisherfaces(x_fit: torch.Tensor, y_fit: torch.Tensor, x_score: torch.Tensor, seed: int) -> np.ndarray:
    """PCA to at most N - C dimensions (so the within-class scatter is invertible), then plain LDA."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n = min(100, len(x_fit) - len(torch.unique(y_fit)))
    pca = PCA(n, random_state=0).fit(x_fit.flatten(1).numpy())
    lda = LinearDiscriminantAnalysis().fit(pca.transform(x_fit.flatten(1).numpy()), y_fit.numpy())
    return lda.transform(pca.transform(x_score.flatten(1).numpy()))


#: Networks trained in this process, by (init, overrides, split seed, fitted identities): several rows of the
#: table read one training (its embedding, an LDA head on it, its layer-3 map).
_TRAINED: Dict[Tuple[Any, ...], Any] = {}


def trained(init: str, overrides: Dict[str, Any], x_fit: torch.Tensor, y_fit: torch.Tensor, seed: int,
            reinit: Tuple[str, ...] = ()) -> Any:
    """The small network after :func:`resnet_arcface.fit` on the training identities (cached per split).

    ``init`` is ``"synthetic"`` (the shipped weights, with ``FINETUNE`` under ``overrides``) or ``"scratch"``.
    ``reinit`` names modules (e.g. ``("fc5", "bn5")``) whose weights are drawn afresh before training: the
    stages that specialised on synthetic identities start again, the others keep what they learned.
    """
    key = (init, tuple(sorted(overrides.items())), reinit, seed, tuple(torch.unique(y_fit).tolist()))
    if key not in _TRAINED:
        if init == "synthetic":
            model, config = pretrained("synthetic"), {**RECIPE, **FINETUNE, **overrides}
        else:
            torch.manual_seed(seed)
            model, config = resnet_arcface_small(), {**RECIPE, **overrides}
        torch.manual_seed(seed)
        for name in reinit:
            for module in getattr(model, name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        if config["epochs"] > 0:
            fit(model, x_fit, y_fit, seed=seed, device="cpu", progress=False, **config)
        _TRAINED.clear()  # one network at a time: the rows of one training are adjacent in METHODS
        _TRAINED[key] = model.eval()
    return _TRAINED[key]


def network(init: str, head: str = "embedding", reinit: Tuple[str, ...] = (), mirror: bool = False,
            **overrides: Any) -> Features:
    """A method that reads the network of :func:`trained`: its embedding (``head="embedding"``), an LDA head
    fitted on the training identities' embeddings (``"lda"``), or its layer-2 or layer-3 map (``"layer2"``,
    ``"layer3"``, read by :class:`resnet_arcface.eval.StageFeatures`); ``mirror`` adds the mirror image's
    features (:class:`resnet_arcface.eval.FlipSum`, flip test-time augmentation)."""
    def features(x_fit: torch.Tensor, y_fit: torch.Tensor, x_score: torch.Tensor, seed: int) -> np.ndarray:
        model = trained(init, overrides, x_fit, y_fit, seed, reinit)
        reader = StageFeatures(model, "embedding" if head == "lda" else head)
        reader = FlipSum(reader) if mirror else reader
        scored = embed(reader, x_score).numpy()
        return lda_head(embed(reader, x_fit).numpy(), y_fit, scored) if head == "lda" else scored

    return features


#: Every method of the table, in its order.
METHODS: Dict[str, Features] = {
    "pixels (cosine at 32 px)": pixels,
    "eigenfaces (PCA 50)": eigenfaces,
    "fisherfaces (PCA 100 + LDA)": fisherfaces,
    "shipped, as is": network("synthetic", epochs=0),
    "shipped frozen + LDA head": network("synthetic", "lda", epochs=0),
    "shipped frozen, layer-3 map": network("synthetic", "layer3", epochs=0),
    "shipped frozen, layer-3 map + mirror": network("synthetic", "layer3", mirror=True, epochs=0),
    "scratch, flip": network("scratch", augment="flip"),
    "scratch, flip, layer-3 map": network("scratch", "layer3", augment="flip"),
    "scratch, flip, + mirror": network("scratch", mirror=True, augment="flip"),
    "scratch, flip, layer-3 map + mirror": network("scratch", "layer3", mirror=True, augment="flip"),
    "scratch, faces": network("scratch"),
    "scratch, faces + LDA head": network("scratch", "lda"),
    "scratch, faces, layer-3 map": network("scratch", "layer3"),
    "scratch, faces, layer-2 map": network("scratch", "layer2"),
    "fine-tune, flip": network("synthetic", augment="flip"),
    "fine-tune, flip, + mirror": network("synthetic", mirror=True, augment="flip"),
    "fine-tune, flip, layer-3 map + mirror": network("synthetic", "layer3", mirror=True, augment="flip"),
    "fine-tune, faces": network("synthetic"),
    "fine-tune, faces + LDA head": network("synthetic", "lda"),
    "fine-tune, faces, layer-3 map": network("synthetic", "layer3"),
    "fine-tune, flip, fc5 re-initialised": network("synthetic", augment="flip", reinit=("fc5", "bn5")),
    "fine-tune, flip, fc5 re-initialised, layer-3 map": network("synthetic", "layer3", augment="flip",
                                                               reinit=("fc5", "bn5")),
    "fine-tune, flip, layer4 + fc5 re-initialised": network("synthetic", augment="flip",
                                                           reinit=("layer4", "bn4", "fc5", "bn5")),
    "fine-tune, flip, layer4 + fc5 re-initialised, layer-3 map": network(
        "synthetic", "layer3", augment="flip", reinit=("layer4", "bn4", "fc5", "bn5")),
}


def splits(count: int, protocol: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(fit identities, scored identities)`` of each split: a seeded shuffle of the 40 people."""
    out = []
    for seed in range(count):
        people = torch.randperm(40, generator=torch.Generator().manual_seed(seed))
        train, held_out = people[:TRAIN_IDENTITIES], people[TRAIN_IDENTITIES:]
        out.append((train[:VAL_FIT_IDENTITIES], train[VAL_FIT_IDENTITIES:]) if protocol == "val" else (train, held_out))
    return out


def run(methods: Sequence[str], count: int, protocol: str) -> Dict[str, Dict[str, List[float]]]:
    images, labels = olivetti_faces()
    results: Dict[str, Dict[str, List[float]]] = {m: {"auc": [], "tar@1e-2": [], "tar@1e-3": [], "seconds": []}
                                                  for m in methods}
    for seed, (fit_ids, score_ids) in enumerate(splits(count, protocol)):
        fitted, scored = torch.isin(labels, fit_ids), torch.isin(labels, score_ids)
        for name in methods:
            tic = time.perf_counter()
            emb = METHODS[name](images[fitted], labels[fitted], images[scored], seed)
            r = evaluate_embeddings(torch.as_tensor(emb, dtype=torch.float32), labels[scored])
            row = results[name]
            row["auc"].append(r["auc"])
            row["tar@1e-2"].append(r["tar_at_far"][1e-2])
            row["tar@1e-3"].append(r["tar_at_far"][1e-3])
            row["seconds"].append(time.perf_counter() - tic)
            print(f"split {seed} {name:34} AUC {r['auc']:.3f}  TAR {r['tar_at_far'][1e-2]:.3f} @1e-2  "
                  f"{r['tar_at_far'][1e-3]:.3f} @1e-3  ({row['seconds'][-1]:.0f} s)", flush=True)
    return results


def table(results: Dict[str, Dict[str, List[float]]]) -> str:
    """A markdown table: mean +- standard deviation over the splits, and the range."""
    lines = ["| method | AUC | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 | seconds per split |", "|---|---|---|---|---|"]
    for name, row in results.items():
        cells = [f"{np.mean(row[k]):.3f} ± {np.std(row[k]):.3f}" for k in ("auc", "tar@1e-2", "tar@1e-3")]
        lines.append(f"| {name} | {' | '.join(cells)} | {np.mean(row['seconds']):.0f} |")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3, help="identity splits (seeds 0..n-1), at least 3")
    parser.add_argument("--protocol", choices=("test", "val"), default="test",
                        help="test: score the held-out 20; val: score 6 of the 20 training identities (choices)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
                        help=f"any of: {'; '.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_faces.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    results = run(args.methods, args.splits, args.protocol)
    machine = {"cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "python": platform.python_version(), "resnet_arcface": __version__,
               "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None}
    print(table(results))
    print(f"{time.perf_counter() - tic:.0f} s in all; {json.dumps(machine)}")
    if args.protocol == "test":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
                                        "recipe": {**RECIPE, "finetune": FINETUNE}, "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
