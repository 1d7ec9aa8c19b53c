"""``arcface-verify``: open-set verification of trained weights."""
import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import __version__
from ..data.folders import read_image_folder
from ..eval.verify import FARS, evaluate, evaluate_embeddings
from ..learn.losses import LOSSES
from ..learn.training import OPTIMIZERS, fit
from ..models.checkpoint import CheckpointMismatchError, load_checkpoint
from .common import (ARCHS, CLI_SCALE, FILES, TEST_SEED_OFFSET, VAL_SEED_OFFSET, UsageError, _common_flags, _fail,
                     _finite, _pair, _Parser, _positive, _write_atomic, build_model, device_flag, pair_counts,
                     DEFAULT_ARCH, saved_arch)


def _verify_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-verify", description=(
        "Open-set verification of trained weights: scores every pair of images of identities the network never "
        "saw and prints AUC, TAR at FAR 1e-2 and 1e-3, the best threshold and its balanced accuracy, next to "
        "the same numbers for raw pixels. --arch and --size default to those in metrics.json beside --weights."))
    parser.add_argument("--weights", type=Path, required=True, metavar="FILE", help="a state_dict written by arcface-train")
    _common_flags(parser)
    parser.add_argument("--seed", type=int, help=f"with --synthetic: identities' seed (default: the training seed "
                        f"+ {TEST_SEED_OFFSET}, so neither training nor its validation saw them)")
    parser.add_argument("--batch-size", type=_positive(int), default=256, metavar="N", help="images per forward pass")
    return parser


def _verify_setup(args: argparse.Namespace) -> Tuple[nn.Module, int]:
    """Build the network the weights were trained as and load them; returns ``(model, training seed)``."""
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
    return model.eval(), int(saved.get("seed", 0))


def verify_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``arcface-verify``; returns the exit status."""
    args = _verify_parser().parse_args(argv)
    prog = "arcface-verify"
    try:
        model, train_seed = _verify_setup(args)
        device = device_flag(args.device)
        torch.set_num_threads(args.threads)
        if args.synthetic:
            from ..data.synthetic import synthetic_faces

            seed = train_seed + TEST_SEED_OFFSET if args.seed is None else args.seed
            images, labels = synthetic_faces(*args.synthetic, size=args.size, seed=seed)
            described = f"{args.synthetic[0]} synthetic identities x {args.synthetic[1]} images (seed {seed})"
        else:
            images, labels, names = read_image_folder(args.data, args.size)
            described = f"{len(images)} images of {len(names)} identities in {args.data}"
        genuine, impostor = pair_counts(labels)
        if not genuine or not impostor:
            raise UsageError(f"{described} give {genuine} genuine and {impostor} impostor pairs; verification needs "
                             f"two or more identities, some with two or more images.")
    except (UsageError, ValueError) as err:
        return _fail(prog, str(err))
    rows = {"network": evaluate(model.to(device), images, labels, args.batch_size),
            "raw pixels": evaluate_embeddings(images.flatten(1), labels)}
    print(f"{prog}: {args.weights} ({args.arch}, {args.size} px) on {described}; open set, "
          f"{genuine:,} genuine and {impostor:,} impostor pairs")
    print(f"{'':16}" + "".join(f"{name:>12}" for name in rows))
    table = [("AUC", lambda r: r["auc"])] + [(f"TAR @ FAR {f:.0e}", lambda r, f=f: r["tar_at_far"][f]) for f in FARS]
    table += [("threshold", lambda r: r["threshold"]), ("accuracy", lambda r: r["accuracy"])]
    for title, get in table:
        print(f"{title:16}" + "".join(f"{get(r):>12.4f}" for r in rows.values()))
    return 0


if __name__ == "__main__":
    sys.exit(verify_main())
