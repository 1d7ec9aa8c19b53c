"""``arcface-train``: train an embedding network with a margin loss.

The training flags are the fields of :class:`~resnet_arcface.learn.config.TrainConfig` (``--batch-size`` sets
``batch_size``; ``--scale`` and ``--margin`` set ``s`` and ``m``: :data:`FLAG_NAMES`), with its defaults; a flag
not given leaves the field's default. ``--init`` starts from trained weights and adds the fine-tuning defaults
:data:`~resnet_arcface.learn.config.FINETUNE` under the flags. ``OUT/metrics.json`` records the resolved config
next to the network, the data and ``--init``; ``--resume`` compares them with the flags field by field and
refuses a changed ``--epochs`` (the length of the learning-rate schedule) unless ``--warm-restart`` asks for a
new schedule over the remaining epochs. Every input, and whether ``--out`` can be written, is checked before
training starts.
"""
import argparse
import builtins
import dataclasses
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..data.folders import LabelledSubset, UnreadableImageError
from ..data.packed import open_faces
from ..data.augment import AUGMENTATIONS
from ..eval.verify import pixel_baseline
from ..learn.config import FINETUNE, MAX_FREEZE_STAGES, NOT_COMPARED, OPTIMIZERS, TrainConfig
from ..learn import distributed
from ..learn.losses import LOSSES
from ..learn.training import fit
from ..models.checkpoint import CheckpointMismatchError, load_checkpoint
from ..models.shipped import AVAILABLE, WEIGHTS_DIR
from .common import (ARCHS, DEFAULT_ARCH, FILES, VAL_SEED_OFFSET, UsageError, _common_flags, _fail, _finite, _pair,
                     _Parser, _positive, _write_atomic, build_model, device_flag, pair_counts)


#: ``arcface-train`` flags that set a :class:`TrainConfig` field of another name; every other field's flag is
#: its name with dashes (``batch_size`` -> ``--batch-size``).
FLAG_NAMES = {"s": "scale", "m": "margin"}
_DEFAULTS = TrainConfig()


def _flag(field: str) -> str:
    return "--" + FLAG_NAMES.get(field, field).replace("_", "-")


def _train_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-train", description=(
        "Train a ResNetArcFace embedding with a margin loss. Writes OUT/weights.pt (a plain state_dict for "
        "resnet_arcface.load_checkpoint), OUT/metrics.json (the configuration, per-epoch loss, training accuracy "
        "and open-set verification on held-out identities) and OUT/checkpoint.pt (for --resume). The training "
        "flags are the fields of resnet_arcface.learn.config.TrainConfig, with its defaults."))
    _common_flags(parser)
    d = _DEFAULTS
    parser.add_argument("--loss", choices=sorted(LOSSES), help=f"default: {d.loss}")
    parser.add_argument("--epochs", type=_positive(int), metavar="N",
                        help=f"epochs; the learning rate's warm-up and cosine span them (default: {d.epochs})")
    parser.add_argument("--batch-size", type=_positive(int), metavar="N", help=f"default: {d.batch_size}")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS),
                        help=f"default: {d.optimizer} (sgd: momentum 0.9)")
    parser.add_argument("--lr", type=_positive(float), help="peak learning rate of the head (default: " +
                        ", ".join(f"{k} {v[0]:g}" for k, v in sorted(OPTIMIZERS.items())) + ")")
    parser.add_argument("--warmup", type=float, metavar="F", help=f"fraction of all steps over which the learning "
                        f"rate rises linearly from 0, before its cosine decay (default: {d.warmup:g})")
    parser.add_argument("--weight-decay", type=float, metavar="WD", help="weight decay of the 2-D weights; never "
                        "on BatchNorm, PReLU or biases (default: " +
                        ", ".join(f"{k} {v[1]:g}" for k, v in sorted(OPTIMIZERS.items())) + ")")
    parser.add_argument("--scale", type=_positive(float),
                        help="the head's scale s (default: AdaCos's sqrt(2) ln(C - 1) for C training identities, "
                             "about 7.5 for 200; not for softmax). InsightFace's 64 is made for tens of thousands "
                             "of identities: with a few hundred ArcFace stalls at 64")
    parser.add_argument("--margin", type=_positive(float), help="the head's m (default: arcface 0.5, cosface 0.35)")
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS),
                        help=f"augmentation of each training batch (default: {d.augment})")
    parser.add_argument("--seed", type=int, help="seeds the network, the data order, the augmentation and, with "
                        f"--synthetic, the identities (held-out ones use seed + {VAL_SEED_OFFSET}) (default: {d.seed})")
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"processes reading batches (default: {d.workers}, read in this one)")
    parser.add_argument("--init", metavar="{" + ",".join(AVAILABLE) + ",FILE}",
                        help=f"start from trained weights: the shipped ones ({', '.join(AVAILABLE)}) or a state_dict "
                             "FILE of the "
                             "same --arch and --size; a new head is trained for the new identities. Fine-tuning "
                             "defaults then apply: " + ", ".join(f"{_flag(k)} {v}" for k, v in FINETUNE.items()))
    parser.add_argument("--backbone-lr-scale", type=float, metavar="F",
                        help=f"the network's learning rate is F times the head's (default: {d.backbone_lr_scale:g}; "
                             f"with --init: {FINETUNE.get('backbone_lr_scale', d.backbone_lr_scale):g})")
    parser.add_argument("--freeze-stages", type=int, metavar="K",
                        help=f"keep the first K stages' weights and BatchNorm statistics fixed: 1 the stem, 2..5 also "
                             f"layer1..layer4, {MAX_FREEZE_STAGES} the whole network (default: {d.freeze_stages})")
    parser.add_argument("--head-warmup-epochs", type=int, metavar="K",
                        help=f"train only the head for the first K epochs (default: {d.head_warmup_epochs}; with "
                             f"--init: {FINETUNE.get('head_warmup_epochs', d.head_warmup_epochs)})")
    parser.add_argument("--val", type=_pair, default=(100, 10), metavar="IDS,PER_ID",
                        help="with --synthetic: held-out identities verified each epoch (default: 100,10)")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="with --data: fraction of identities held out for verification (default: 0.2)")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), metavar="DIR", help="output folder (default: runs/train)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (repeat its flags)")
    parser.add_argument("--warm-restart", action="store_true",
                        help="with --resume and a new --epochs: keep the weights and optimizer state, and run a new "
                             "learning-rate warm-up and cosine over the remaining epochs (without it, changing "
                             "--epochs of a run is refused: its schedule would jump)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm), not "
                             "each process's share")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    return parser


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the flags ask for (``--init`` adds :data:`FINETUNE` under them)."""
    if args.loss == "softmax" and (args.scale is not None or args.margin is not None):
        raise UsageError("--scale/--margin: the softmax loss has neither; drop them or choose --loss arcface/cosface.")
    if args.synthetic and args.val[1] < 2:
        raise UsageError(f"--val {args.val[0]},{args.val[1]}: verification needs at least 2 images per held-out "
                         f"identity (genuine pairs); try --val 100,10.")
    if args.data is not None and not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: expected a fraction in [0, 1), e.g. 0.2.")
    if args.warm_restart and not args.resume:
        raise UsageError("--warm-restart restarts the schedule of a run being resumed; add --resume.")
    given = {f.name: getattr(args, FLAG_NAMES.get(f.name, f.name)) for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in given.items() if v is not None}
    fields = {**(FINETUNE if args.init is not None else {}), **given}
    epochs = fields.get("epochs", _DEFAULTS.epochs)
    if fields.get("head_warmup_epochs", 0) >= epochs:
        source = "" if "head_warmup_epochs" in given else " (the --init default)"
        raise UsageError(f"--head-warmup-epochs {fields['head_warmup_epochs']}{source} leaves no epoch to train the "
                         f"network in --epochs {epochs}; give more --epochs or a smaller --head-warmup-epochs.")
    try:
        return TrainConfig(**fields)
    except ValueError as err:  # the message names the field; name the flag too
        bad = next((f for f in fields if f" {f} " in str(err) or f" {f}:" in str(err)), None)
        prefix = f"{_flag(bad)}: " if bad else ""
        raise UsageError(prefix + str(err).replace("TrainConfig: ", "")) from None


def _run_config(args: argparse.Namespace, config: TrainConfig) -> Dict[str, Any]:
    """What defines a run, as metrics.json records it: the network, the data, --init, and the resolved
    :class:`TrainConfig`'s fields."""
    data = ({"synthetic": list(args.synthetic), "val": list(args.val)} if args.synthetic
            else {"folder": str(args.data), "val_fraction": args.val_fraction})
    return {"arch": args.arch, "size": args.size, "data": data, "init": args.init, **config.to_dict()}


#: With ``--data``, held-out identities are verified after every epoch from memory (float32, all N(N - 1)/2
#: pairs, which took 400 MB at N = 4,000): whole identities are held out until their images reach this many, so
#: that memory does not grow with the folder (the other identities train).
MAX_VAL_IMAGES = 2000


def _train_data(args: argparse.Namespace, workers: int = 0
                ) -> Tuple[Tuple[Any, Optional[torch.Tensor]], Optional[Tuple[torch.Tensor, torch.Tensor]], str]:
    """``(train, val or None, description)``; identities of val are never in train (open set).

    ``train`` is ``(images, labels)`` tensors for ``--synthetic``, and ``(Dataset, None)`` for ``--data`` (a
    folder of photographs decoded as batches are drawn, or a packed folder:
    :func:`~resnet_arcface.data.packed.open_faces`); the held-out images are decoded by ``workers`` processes.
    """
    if args.synthetic:
        from ..data.synthetic import synthetic_faces

        (ids, per), (vids, vper) = args.synthetic, args.val
        train = synthetic_faces(ids, per, size=args.size, seed=args.seed)
        val = synthetic_faces(vids, vper, size=args.size, seed=args.seed + VAL_SEED_OFFSET)
        return train, val, (f"{ids} synthetic identities x {per} images (seed {args.seed}); held out: {vids} x "
                            f"{vper} (seed {args.seed + VAL_SEED_OFFSET})")
    faces = open_faces(args.data, args.size)
    labels, names = faces.labels, faces.names
    whole = f"{len(faces)} images of {len(names)} identities in {args.data}; no held-out set"
    n_val = int(round(args.val_fraction * len(names)))
    if n_val < 2 or len(names) - n_val < 2:  # verification needs two identities, training too
        return (faces, None), None, whole
    held = torch.randperm(len(names), generator=torch.Generator().manual_seed(args.seed))[:n_val]
    counts = torch.bincount(labels, minlength=len(names))[held]
    n_val = max(2, int((counts.cumsum(0) <= MAX_VAL_IMAGES).sum()))  # whole identities, up to the cap
    is_val = torch.isin(labels, held[:n_val])
    if not pair_counts(labels[is_val])[0]:  # every held-out identity has one image: nothing to verify
        return (faces, None), None, whole
    train = LabelledSubset(faces, torch.nonzero(~is_val)[:, 0])
    val_items = LabelledSubset(faces, torch.nonzero(is_val)[:, 0])
    images = torch.cat([x for x, _ in DataLoader(val_items, batch_size=256, num_workers=workers)])
    return ((train, None), (images.float() / 255, val_items.labels),
            f"{len(train)} images of {len(names) - n_val} identities in {args.data}; held out: "
            f"{len(val_items)} images of {n_val} identities")


def _resume_state(out: Path, run: Dict[str, Any], warm_restart: bool) -> Dict[str, Any]:
    """The saved training state in ``out``, after checking it belongs to the same run (``run``: see
    :func:`_run_config`) and that its learning-rate schedule is kept, or ``warm_restart`` is asked for."""
    if not (out / "checkpoint.pt").is_file() or not (out / "metrics.json").is_file():
        raise UsageError(f"--resume: {out} holds no run to resume (checkpoint.pt and metrics.json); drop --resume "
                         f"to start one.")
    try:
        saved = json.loads((out / "metrics.json").read_text())["config"]
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        done, schedule = int(state["epoch"]), state["schedule"]
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
        raise UsageError(f"--resume: cannot read the run in {out} ({type(err).__name__}: from another version?); "
                         f"start afresh with another --out.") from None
    for key in [*run, *(k for k in saved if k not in run)]:  # the network, data and --init first
        if key in ("epochs", *NOT_COMPARED) or saved.get(key) == run.get(key):
            continue
        flag = {"arch": "--arch", "size": "--size", "data": "--synthetic/--data/--val/--val-fraction",
                "init": "--init"}.get(key) or _flag(key)
        raise UsageError(f"--resume: {flag} differs from the run in {out} ({json.dumps(run.get(key))} here, "
                         f"{json.dumps(saved.get(key))} there); repeat that run's flags or choose another --out.")
    epochs = run["epochs"]
    if done >= epochs:
        raise UsageError(f"--epochs {epochs}: the run in {out} has already trained {done} epochs; pass a larger "
                         f"--epochs with --warm-restart to train longer.")
    if epochs != schedule["epochs"] and not warm_restart:
        raise UsageError(f"--epochs {epochs}: the run in {out} has a learning-rate schedule over "
                         f"{schedule['epochs']} epochs; repeat --epochs {schedule['epochs']}, or add --warm-restart for "
                         f"a new warm-up and cosine over epochs {done + 1}..{epochs}.")
    return state


def _epoch_line(history: Dict[str, List[Any]], epochs: int) -> str:
    e = len(history["epoch"]) - 1
    line = (f"epoch {history['epoch'][e]:>{len(str(epochs))}}/{epochs}  loss {history['loss'][e]:7.3f}  "
            f"train acc {history['train_accuracy'][e]:.3f}")
    v = history["verification"][e]
    if v is not None:
        line += f"  held-out AUC {v['auc']:.3f}  TAR@FAR=1e-3 {v['tar_at_far'][1e-3]:.3f}"
    return line + f"  {history['images_per_s'][e]:,.0f} img/s"


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot hold a run, before anything is trained or written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder path.")
    clash = [f for f in FILES if (out / f).exists()]
    if clash:
        raise UsageError(f"--out {out} already holds a run ({', '.join(clash)}); pass --resume to continue it, or "
                         f"choose another --out.")
    _check_writable(out)


def _check_writable(out: Path) -> None:
    """A ``UsageError`` unless files can be created in ``out`` (or, if it does not exist yet, in the folder that
    will hold it): probed with a temporary file, removed at once, so that a run does not fail at its first save."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, so no folder can be made there; choose another --out.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write in {existing} ({err.strerror or type(err).__name__}); choose "
                         f"another --out.") from None


def _init_weights(model: nn.Module, init: str, arch: str, size: int) -> None:
    """Load ``--init`` (a shipped weights name or a state_dict file) into ``model``, or raise a ``UsageError``."""
    if init in AVAILABLE:
        path = WEIGHTS_DIR / f"{init}.pt"
        if not path.is_file():
            raise UsageError(f"--init {init}: the shipped weights are missing from {WEIGHTS_DIR}; rebuild them "
                             f"with arcface-weights.")
    else:
        path = Path(init)
        if not path.is_file():
            raise UsageError(f"--init {init}: no such file, and not a shipped weights name ({', '.join(AVAILABLE)}); "
                             f"give a state_dict file written by arcface-train (weights.pt).")
    try:
        load_checkpoint(model, path)
    except CheckpointMismatchError:
        raise UsageError(f"--init {init} does not fit the {arch} network at {size} px; pass the --arch and --size "
                         f"it was trained with.") from None
    except ValueError as err:
        raise UsageError(f"--init {init}: {str(err).splitlines()[0]}") from None


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``arcface-train``; returns the exit status."""
    args = _train_parser().parse_args(argv)
    prog = "arcface-train"
    try:
        args.arch = args.arch or DEFAULT_ARCH
        args.size = args.size or ARCHS[args.arch]
        config = _train_config(args)
        args.seed = config.seed
        out: Path = args.out
        if not args.resume:
            _check_out(out)
        else:
            _check_writable(out)
        # Under torchrun: join the other processes (each takes cuda:LOCAL_RANK); alone: the device as asked.
        device = distributed.init(device_flag(args.device))
        distributed.local_batch_size(config.batch_size)  # the global batch must split evenly over the processes
        torch.set_num_threads(args.threads)
        torch.manual_seed(config.seed)
        model = build_model(args.arch, args.size)
        if args.init is not None:
            _init_weights(model, args.init, args.arch, args.size)
        if args.sync_bn:
            model = distributed.sync_batchnorm(model, device)
        train, val, described = _train_data(args, config.workers)
        train_labels = train[1] if train[1] is not None else train[0].labels
        config = config.resolved(int(len(torch.unique(train_labels))))
        run = _run_config(args, config)
        state = _resume_state(out, run, args.warm_restart) if args.resume else None
    except (UsageError, ValueError) as err:
        return _fail(prog, str(err))
    # Rank 0 alone prints and writes files (fit calls `save` on rank 0 only); the others train silently.
    print = builtins.print if distributed.is_main() else _silent  # noqa: A001

    scale = "" if config.loss == "softmax" else f" (s {config.s:.3g}, m {config.m:g})"
    print(f"{prog}: {args.arch} network at {args.size} px ({sum(p.numel() for p in model.parameters()):,} "
          f"parameters){'' if args.init is None else ' from ' + args.init}, {config.loss} loss{scale}, "
          f"{config.optimizer} at lr {config.lr:g}, {device}, {args.threads} CPU thread(s)"
          + ("" if distributed.world_size() == 1 else f" in each of {distributed.world_size()} processes "
             f"(global batch {config.batch_size})"))
    print(f"data: {described}")
    metrics: Dict[str, Any] = {
        "command": "arcface-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "config": run, "device": str(device), "threads": args.threads, "torch": torch.__version__,
        "resnet_arcface": __version__, "train_images": len(train_labels),
        "train_identities": int(len(torch.unique(train_labels))),
        "val_images": 0 if val is None else len(val[0]),
        "val_identities": 0 if val is None else int(len(torch.unique(val[1]))),
        "pixel_baseline": None if val is None or not distributed.is_main() else pixel_baseline(*val),
        "processes": distributed.world_size(), "sync_bn": args.sync_bn,
    }

    def save(snapshot: Dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        history = snapshot["history"]
        metrics.update(epochs=config.epochs, epochs_done=snapshot["epoch"], schedule=snapshot["schedule"],
                       history=history, final=history["verification"][-1])
        _write_atomic(out / "checkpoint.pt", snapshot)
        _write_atomic(out / "weights.pt", snapshot["model"])
        _write_atomic(out / "metrics.json", json.dumps(_finite(metrics), indent=1) + "\n")
        print(_epoch_line(history, config.epochs), flush=True)

    try:
        fit(model, *train, config, device=device, val=val, progress=not args.no_progress, resume=state,
            warm_restart=args.warm_restart, on_epoch_end=save)
    except KeyboardInterrupt:
        return _fail(prog, f"interrupted; {out} holds the last finished epoch, --resume continues it", 130)
    except (FloatingPointError, UnreadableImageError) as err:  # found during training: some epochs may be saved
        return _fail(prog, str(err), 1)
    if metrics["pixel_baseline"] is not None:
        b = metrics["pixel_baseline"]
        print(f"raw-pixel baseline on the held-out set: AUC {b['auc']:.3f}  TAR@FAR=1e-3 {b['tar_at_far'][1e-3]:.3f}")
    print(f"wrote {out / 'weights.pt'} and {out / 'metrics.json'}")
    distributed.shutdown()
    return 0


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` on the processes other than rank 0."""


if __name__ == "__main__":
    sys.exit(train_main())
