"""``arcface-verify``: open-set verification of trained weights, on every pair or on an LFW-style pair list.

Two protocols (see :mod:`resnet_arcface.eval.pairs_protocol` for when to use which): with ``--synthetic`` or
``--data DIR`` alone, every pair of the held-out images is scored and the ROC read at FAR 1e-2 and 1e-3 (in
blocks, in bounded memory, for large sets); with ``--data DIR --pairs FILE``, the pairs the file lists are
scored and 10-fold accuracy +- std reported, as papers report LFW.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.folders import read_image_folder
from ..eval.readout import READOUTS, FlipSum, StageFeatures
from ..eval.pairs_protocol import evaluate_pairs, kfold_accuracy, pair_cosines, read_pair_images, read_pairs
from ..eval.verify import EXACT_MAX_PAIRS, FARS, evaluate, pixel_baseline
from ..models.checkpoint import CheckpointMismatchError, load_checkpoint
from .common import (ARCHS, DEFAULT_ARCH, TEST_SEED_OFFSET, VAL_SEED_OFFSET, UsageError, _common_flags, _fail, _Parser,
                     _positive, build_model, device_flag, pair_counts, saved_arch)


def _exact_max_images() -> int:
    """The largest N whose N (N - 1) / 2 pairs get the exact ROC."""
    return (1 + math.isqrt(1 + 8 * EXACT_MAX_PAIRS)) // 2


def _verify_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-verify", description=(
        "Open-set verification of trained weights on identities the network never saw, next to the same numbers "
        "for raw pixels. All pairs (--synthetic, or --data alone): every pair of images is scored and AUC, TAR at "
        "FAR 1e-2 and 1e-3, the best threshold and its balanced accuracy are printed; the measure to use for "
        f"your own data and for a threshold you will deploy. Above {_exact_max_images():,} images the pairs are "
        "scored in blocks into a fine histogram (bounded memory; 50,000 images fit). Listed pairs (--data DIR "
        "--pairs FILE): the pairs of an LFW-style file are scored and 10-fold accuracy +- std is printed, each "
        "fold's threshold chosen on the other nine, as papers report LFW; use it to compare with published numbers. "
        "--arch, --size and the training seed come from metrics.json beside --weights."))
    parser.add_argument("--weights", type=Path, required=True, metavar="FILE",
                        help="a state_dict written by arcface-train")
    _common_flags(parser)
    parser.add_argument("--seed", type=int, help=f"with --synthetic: identities' seed (default: the training seed in "
                        f"metrics.json + {TEST_SEED_OFFSET}, so neither training nor its validation saw them; "
                        f"required when there is no metrics.json beside --weights)")
    parser.add_argument("--pairs", type=Path, metavar="FILE", help="with --data: an LFW-style pairs file (first line "
                        "'folds pairs_per_fold', e.g. '10 300'; then 'name n1 n2' genuine and 'name1 n1 name2 n2' "
                        "impostor lines); photo n of name is DIR/name/name_%%04d.jpg")
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation: embed each image and its "
                        "mirror and sum the two embeddings (InsightFace's verification does)")
    parser.add_argument("--features", choices=READOUTS, default="embedding", metavar="STAGE",
                        help="what to compare: the network's embedding (default), or the flattened output of an earlier "
                             f"stage, one of {', '.join(READOUTS[:-1])} (on a new domain with few training identities "
                             "an earlier stage can verify new people better; see chapter 11)")
    parser.add_argument("--batch-size", type=_positive(int), default=256, metavar="N", help="images per forward pass")
    return parser


def _verify_setup(args: argparse.Namespace) -> Tuple[nn.Module, Optional[int]]:
    """Build the network the weights were trained as and load them; returns ``(model, training seed or None)``."""
    if args.pairs is not None and args.data is None:
        raise UsageError("--pairs needs --data DIR, the folder of the photos it lists (DIR/name/name_0001.jpg).")
    if args.seed is not None and not args.synthetic:
        raise UsageError("--seed chooses synthetic identities; it has no effect with --data, so leave it out.")
    if not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: no such file; give the weights.pt that arcface-train wrote.")
    saved: Dict[str, Any] = {}
    metrics = args.weights.parent / "metrics.json"
    if metrics.is_file():
        try:
            saved = json.loads(metrics.read_text()).get("config", {})
        except (json.JSONDecodeError, AttributeError):
            saved = {}
    args.arch = args.arch or saved_arch(saved.get("arch", DEFAULT_ARCH))
    args.size = args.size or saved.get("size") or ARCHS[args.arch]
    model = build_model(args.arch, args.size)
    try:
        load_checkpoint(model, args.weights)
    except CheckpointMismatchError:
        raise UsageError(f"--weights {args.weights} does not fit the {args.arch} network at {args.size} px; pass "
                         f"the --arch and --size it was trained with.") from None
    if args.synthetic and args.seed is None and not isinstance(saved.get("seed"), int):
        # Without the training seed, a default would guess it: guessing wrong can make the "held-out"
        # identities the very ones the network trained on.
        raise UsageError(f"--weights {args.weights}: no training seed in {metrics} (missing or unreadable), so the "
                         f"held-out synthetic identities are unknown; pass --seed S, a seed the network never saw (not "
                         f"its training seed T, nor T + {VAL_SEED_OFFSET}, its validation seed; the default with a "
                         f"metrics.json is T + {TEST_SEED_OFFSET}).")
    return model.eval(), saved.get("seed")


def _need_pairs(labels: torch.Tensor, described: str) -> Tuple[int, int]:
    genuine, impostor = pair_counts(labels)
    if not genuine or not impostor:
        raise UsageError(f"{described} give {genuine} genuine and {impostor} impostor pairs; verification needs "
                         f"two or more identities, some with two or more images.")
    return genuine, impostor


def _print_table(rows: Dict[str, Dict[str, Any]], table: List[Tuple[str, Any]]) -> None:
    print(f"{'':16}" + "".join(f"{name:>12}" for name in rows))
    for title, get in table:
        print(f"{title:16}" + "".join(f"{get(r):>12.4f}" for r in rows.values()))


def verify_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``arcface-verify``; returns the exit status."""
    args = _verify_parser().parse_args(argv)
    prog = "arcface-verify"
    try:
        if args.synthetic:  # checked before the weights: no choice of seed can make these pairs
            ids, per = args.synthetic
            _need_pairs(torch.arange(ids).repeat_interleave(per), f"{ids} synthetic identities x {per} images")
        model, train_seed = _verify_setup(args)
        device = device_flag(args.device)
        torch.set_num_threads(args.threads)
        if args.pairs is not None:
            pairs = read_pairs(args.pairs)
            images = read_pair_images(args.data, pairs, args.size)
        elif args.synthetic:
            from ..data.synthetic import synthetic_faces

            seed = train_seed + TEST_SEED_OFFSET if args.seed is None else args.seed
            images, labels = synthetic_faces(*args.synthetic, size=args.size, seed=seed)
            described = f"{args.synthetic[0]} synthetic identities x {args.synthetic[1]} images (seed {seed})"
        else:
            images, labels, names = read_image_folder(args.data, args.size)
            described = f"{len(images)} images of {len(names)} identities in {args.data}"
            _need_pairs(labels, described)
    except (UsageError, ValueError) as err:
        return _fail(prog, str(err))
    network = StageFeatures(model, args.features)
    network = FlipSum(network) if args.flip else network
    tta = ("" if args.features == "embedding" else f", the network's {args.features} output as its embedding") + (
        ", flip test-time augmentation for the network" if args.flip else "")
    if args.pairs is not None:
        genuine = int(pairs.same.sum())
        rows = {"network": evaluate_pairs(network.to(device), images, pairs, batch_size=args.batch_size),
                "raw pixels": kfold_accuracy(pair_cosines(images.flatten(1), pairs.index), pairs.same, pairs.fold)}
        print(f"{prog}: {args.weights} ({args.arch}, {args.size} px) on the pairs of {args.pairs} ({len(images):,} "
              f"photos in {args.data}): {pairs.folds} folds, {genuine:,} genuine and {len(pairs.same) - genuine:,} "
              f"impostor pairs; each fold's threshold chosen on the other folds{tta}")
        _print_table(rows, [("accuracy", lambda r: r["accuracy"]), ("+- std", lambda r: r["std"]),
                            ("threshold (mean)", lambda r: sum(r["thresholds"]) / len(r["thresholds"]))])
        return 0
    genuine, impostor = pair_counts(labels)
    rows = {"network": evaluate(network.to(device), images, labels, args.batch_size),
            "raw pixels": pixel_baseline(images, labels)}
    print(f"{prog}: {args.weights} ({args.arch}, {args.size} px) on {described}; open set, all pairs: "
          f"{genuine:,} genuine and {impostor:,} impostor pairs{tta}")
    table = [("AUC", lambda r: r["auc"])] + [(f"TAR @ FAR {f:.0e}", lambda r, f=f: r["tar_at_far"][f]) for f in FARS]
    _print_table(rows, table + [("threshold", lambda r: r["threshold"]), ("accuracy", lambda r: r["accuracy"])])
    return 0


if __name__ == "__main__":
    sys.exit(verify_main())
