"""``arcface-train``: train an embedding network with a margin loss."""
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
                     DEFAULT_ARCH)


def _train_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-train", description=(
        "Train a ResNetArcFace embedding with a margin loss. Writes OUT/weights.pt (a plain state_dict for "
        "resnet_arcface.load_checkpoint), OUT/metrics.json (per-epoch loss, training accuracy and open-set "
        "verification on held-out identities) and OUT/checkpoint.pt (for --resume)."))
    _common_flags(parser)
    parser.add_argument("--loss", choices=sorted(LOSSES), default="arcface", help="default: arcface")
    parser.add_argument("--epochs", type=_positive(int), default=10, metavar="N", help="default: 10")
    parser.add_argument("--batch-size", type=_positive(int), default=128, metavar="N", help="default: 128")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd", help="default: sgd (momentum 0.9)")
    parser.add_argument("--lr", type=_positive(float), help="peak learning rate (default: sgd 0.1, adamw 1e-3)")
    parser.add_argument("--scale", type=_positive(float),
                        help=f"the head's scale s (default: {CLI_SCALE:g}; not for softmax). InsightFace's 64 is made "
                             f"for tens of thousands of identities: with a few hundred ArcFace stalls at 64")
    parser.add_argument("--margin", type=_positive(float), help="the head's m (default: arcface 0.5, cosface 0.35)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the network, the data order and, with "
                        f"--synthetic, the identities (held-out ones use seed + {VAL_SEED_OFFSET}) (default: 0)")
    parser.add_argument("--val", type=_pair, default=(100, 10), metavar="IDS,PER_ID",
                        help="with --synthetic: held-out identities verified each epoch (default: 100,10)")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="with --data: fraction of identities held out for verification (default: 0.2)")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), metavar="DIR", help="output folder (default: runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    return parser


def _train_config(args: argparse.Namespace) -> Dict[str, Any]:
    """What defines a run: compared on --resume, recorded in metrics.json."""
    if args.loss == "softmax" and (args.scale is not None or args.margin is not None):
        raise UsageError("--scale/--margin: the softmax loss has neither; drop them or choose --loss arcface/cosface.")
    if args.loss == "arcface" and args.margin is not None and args.margin >= math.pi / 2:
        raise UsageError(f"--margin {args.margin}: ArcFace's margin is an angle in radians below pi/2; try 0.5.")
    if args.synthetic and args.val[1] < 2:
        raise UsageError(f"--val {args.val[0]},{args.val[1]}: verification needs at least 2 images per held-out "
                         f"identity (genuine pairs); try --val 100,10.")
    if args.data is not None and not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: expected a fraction in [0, 1), e.g. 0.2.")
    if args.loss != "softmax" and args.scale is None:
        args.scale = CLI_SCALE
    data = ({"synthetic": list(args.synthetic), "val": list(args.val)} if args.synthetic
            else {"folder": str(args.data), "val_fraction": args.val_fraction})
    return {"arch": args.arch, "size": args.size, "loss": args.loss, "scale": args.scale, "margin": args.margin,
            "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed, "data": data}


def _train_data(args: argparse.Namespace) -> Tuple[Tuple[torch.Tensor, torch.Tensor], Optional[Tuple[torch.Tensor, torch.Tensor]], str]:
    """``(train, val or None, description)``; identities of val are never in train (open set)."""
    if args.synthetic:
        from ..data.synthetic import synthetic_faces

        (ids, per), (vids, vper) = args.synthetic, args.val
        train = synthetic_faces(ids, per, size=args.size, seed=args.seed)
        val = synthetic_faces(vids, vper, size=args.size, seed=args.seed + VAL_SEED_OFFSET)
        return train, val, (f"{ids} synthetic identities x {per} images (seed {args.seed}); held out: {vids} x "
                            f"{vper} (seed {args.seed + VAL_SEED_OFFSET})")
    images, labels, names = read_image_folder(args.data, args.size)
    n_val = int(round(args.val_fraction * len(names)))
    if n_val < 2 or len(names) - n_val < 2:  # verification needs two identities, training too
        return (images, labels), None, f"{len(images)} images of {len(names)} identities in {args.data}; no held-out set"
    held = torch.randperm(len(names), generator=torch.Generator().manual_seed(args.seed))[:n_val]
    is_val = torch.isin(labels, held)
    if not pair_counts(labels[is_val])[0]:  # every held-out identity has one image: nothing to verify
        return (images, labels), None, f"{len(images)} images of {len(names)} identities in {args.data}; no held-out set"
    return ((images[~is_val], labels[~is_val]), (images[is_val], labels[is_val]),
            f"{int((~is_val).sum())} images of {len(names) - n_val} identities in {args.data}; held out: "
            f"{int(is_val.sum())} images of {n_val} identities")


def _resume_state(out: Path, config: Dict[str, Any], epochs: int) -> Dict[str, Any]:
    """The saved training state in ``out``, after checking it belongs to the same run."""
    if not (out / "checkpoint.pt").is_file() or not (out / "metrics.json").is_file():
        raise UsageError(f"--resume: {out} holds no run to resume (checkpoint.pt and metrics.json); drop --resume "
                         f"to start one.")
    try:
        saved = json.loads((out / "metrics.json").read_text())["config"]
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
        raise UsageError(f"--resume: cannot read the run in {out} ({type(err).__name__}); start afresh with "
                         f"another --out.") from None
    for key, value in config.items():
        if saved.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"--resume: {flag} differs from the run in {out} ({json.dumps(value)} here, "
                             f"{json.dumps(saved.get(key))} there); repeat that run's flags or choose another --out.")
    if state["epoch"] >= epochs:
        raise UsageError(f"--epochs {epochs}: the run in {out} has already trained {state['epoch']} epochs; pass a "
                         f"larger --epochs to train longer.")
    return state


def _epoch_line(history: Dict[str, List[Any]], epochs: int) -> str:
    e = len(history["epoch"]) - 1
    line = (f"epoch {history['epoch'][e]:>{len(str(epochs))}}/{epochs}  loss {history['loss'][e]:7.3f}  "
            f"train acc {history['train_accuracy'][e]:.3f}")
    v = history["verification"][e]
    if v is not None:
        line += f"  held-out AUC {v['auc']:.3f}  TAR@FAR=1e-3 {v['tar_at_far'][1e-3]:.3f}"
    return line + f"  {history['images_per_s'][e]:,.0f} img/s"


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``arcface-train``; returns the exit status."""
    args = _train_parser().parse_args(argv)
    prog = "arcface-train"
    try:
        args.arch = args.arch or DEFAULT_ARCH
        args.size = args.size or ARCHS[args.arch]
        config = _train_config(args)
        out: Path = args.out
        if args.resume:
            state = _resume_state(out, config, args.epochs)
        else:
            state = None
            clash = [f for f in FILES if (out / f).exists()]
            if clash:
                raise UsageError(f"--out {out} already holds a run ({', '.join(clash)}); pass --resume to continue "
                                 f"it, or choose another --out.")
            if out.exists() and not out.is_dir():
                raise UsageError(f"--out {out} is a file; give a folder path.")
        device = device_flag(args.device)
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        model = build_model(args.arch, args.size)
        train, val, described = _train_data(args)
    except (UsageError, ValueError) as err:
        return _fail(prog, str(err))

    print(f"{prog}: {args.arch} network at {args.size} px ({sum(p.numel() for p in model.parameters()):,} "
          f"parameters), {args.loss} loss, {device}, {args.threads} CPU thread(s)")
    print(f"data: {described}")
    metrics: Dict[str, Any] = {
        "command": "arcface-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "config": config, "device": str(device), "threads": args.threads, "torch": torch.__version__,
        "resnet_arcface": __version__, "train_images": len(train[0]),
        "train_identities": int(len(torch.unique(train[1]))),
        "val_images": 0 if val is None else len(val[0]),
        "val_identities": 0 if val is None else int(len(torch.unique(val[1]))),
        "pixel_baseline": None if val is None else evaluate_embeddings(val[0].flatten(1), val[1]),
    }

    def save(snapshot: Dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        history = snapshot["history"]
        metrics.update(epochs=args.epochs, epochs_done=snapshot["epoch"], history=history,
                       final=history["verification"][-1])
        _write_atomic(out / "checkpoint.pt", snapshot)
        _write_atomic(out / "weights.pt", snapshot["model"])
        _write_atomic(out / "metrics.json", json.dumps(_finite(metrics), indent=1) + "\n")
        print(_epoch_line(history, args.epochs), flush=True)

    try:
        fit(model, *train, loss=args.loss, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, s=args.scale, m=args.margin, seed=args.seed, device=device, val=val,
            progress=not args.no_progress, resume=state, on_epoch_end=save)
    except KeyboardInterrupt:
        return _fail(prog, f"interrupted; {out} holds the last finished epoch, --resume continues it", 130)
    except FloatingPointError as err:
        return _fail(prog, str(err), 1)
    if metrics["pixel_baseline"] is not None:
        b = metrics["pixel_baseline"]
        print(f"raw-pixel baseline on the held-out set: AUC {b['auc']:.3f}  TAR@FAR=1e-3 {b['tar_at_far'][1e-3]:.3f}")
    print(f"wrote {out / 'weights.pt'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
