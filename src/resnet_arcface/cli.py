"""The commands ``arcface-train`` and ``arcface-verify``.

Bad input (a missing folder, an unreadable image, a flag out of range) is answered with one line that
names the file or flag and the fix, exit status 2, and nothing written: every input is read and checked
before ``--out`` is touched, and each file there is replaced atomically (written next to its final name,
then renamed), so an interrupted run leaves the last finished epoch, complete, for ``--resume``.
"""
import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import CheckpointMismatchError, load_checkpoint
from .data import preprocess
from .device import pick_device
from .losses import LOSSES
from .model import SMALL_CONFIG, ResNetArcFace, resnet_arcface_small
from .train import OPTIMIZERS, fit
from .verify import FARS, evaluate, evaluate_embeddings

#: Architectures the commands build, with their default input size.
ARCHS = {"small": SMALL_CONFIG["input_size"], "resnet_arcface18": 128}
#: File suffixes read as images from ``--data`` folders (anything else there is skipped).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
#: Held-out synthetic identities come from other seeds than training's (disjoint identities, open set):
#: ``arcface-train`` validates on ``seed + 1000``, ``arcface-verify`` defaults to ``seed + 2000``.
VAL_SEED_OFFSET, TEST_SEED_OFFSET = 1000, 2000
FILES = ("checkpoint.pt", "weights.pt", "metrics.json")
#: The command's default scale s for ArcFace and CosFace. With 200 synthetic identities, 8 epochs of the small
#: network reach held-out TAR 0.43 at FAR 1e-3 with s = 16 (ArcFace, m = 0.5), while at InsightFace's s = 64
#: ArcFace stays near chance (0.01 after 4 epochs, like raw pixels): too large a scale saturates the softmax
#: for few classes (AdaCos [Zhang et al. 2019] puts the right scale near sqrt(2) ln(C - 1), about 7.5 for 200).
CLI_SCALE = 16.0


class UsageError(Exception):
    """Bad input: the message is one line naming the flag or file and the fix."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage block) and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _pair(text: str) -> Tuple[int, int]:
    """Parse ``IDS,PER_ID`` (e.g. ``100,10``) for argparse."""
    try:
        ids, per = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IDS,PER_ID such as 100,10, got {text!r}") from None
    if ids < 2 or per < 1:
        raise argparse.ArgumentTypeError(f"expected at least 2 identities and 1 image each (e.g. 100,10), got {text!r}")
    return ids, per


def _positive(kind: type):
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _common_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=_pair, metavar="IDS,PER_ID",
                        help="synthetic identities (resnet_arcface.synthetic_faces), e.g. 200,20")
    source.add_argument("--data", type=Path, metavar="DIR",
                        help="folder with one sub-folder of images per identity (read with Pillow)")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="network (default: small)")
    parser.add_argument("--size", type=_positive(int), metavar="PX",
                        help=f"input side in pixels, a multiple of 16 (default: small {ARCHS['small']}, "
                             f"resnet_arcface18 128)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="where to run (default: auto = cuda, then mps, else cpu)")
    parser.add_argument("--threads", type=_positive(int), metavar="N", default=min(os.cpu_count() or 1, 8),
                        help="CPU threads for torch (default: the number of cores, at most 8: a small network "
                             "stops getting faster beyond a few, and on a shared machine each one slows the others)")


def device_flag(name: str) -> torch.device:
    """The device ``--device name`` asks for, or a :class:`UsageError` when this machine lacks it."""
    try:
        return pick_device(name)
    except ValueError:
        raise UsageError(f"--device {name}: not available on this machine; use --device auto or cpu.") from None


def build_model(arch: str, size: int) -> ResNetArcFace:
    """The network ``arch`` at input side ``size`` (``resnet_arcface18`` is GFPGAN's configuration)."""
    try:
        if arch == "small":
            return resnet_arcface_small(input_size=size)
        return ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=False, input_size=size)
    except ValueError as err:
        raise UsageError(f"--size {size}: {err}") from None


def read_image_folder(root: Path, size: int) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Every image under ``root/<identity>/``, gray, resized to ``size`` as :func:`preprocess` does, in [0, 1].

    Returns:
        ``(images (N, 1, size, size), labels (N,), identity folder names)``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder; give a folder with one sub-folder of images per identity.")
    names, images, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            continue
        for path in files:
            try:
                with Image.open(path) as img:
                    upright = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
                    rgb = _rgb01(upright)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise UsageError(f"--data: cannot read image {path} ({type(err).__name__}: {err}); "
                                 f"replace or remove it.") from None
            x = preprocess(torch.from_numpy(rgb).permute(2, 0, 1), size=size)  # (1, 1, size, size) in [-1, 1]
            images.append((x[0] + 1) / 2)
            labels.append(len(names))
        names.append(folder.name)
    if not images:
        raise UsageError(f"--data {root}: no images found; expected {root}/<identity>/<image> files with suffix "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}.")
    if len(names) < 2:
        raise UsageError(f"--data {root}: only one identity ({names[0]}); a recognition network needs at least two "
                         f"sub-folders of images (one per person).")
    return torch.stack(images), torch.tensor(labels), names


def _rgb01(img: Any) -> np.ndarray:
    """A Pillow image as float32 RGB in [0, 1], (H, W, 3).

    16-bit gray images are scaled by 65535: Pillow's ``convert("RGB")`` clips them at 255, which would turn
    nearly every pixel white. Pillow opens them as mode ``I;16`` (or ``I``, in older versions and for TIFFs).
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        gray = np.asarray(img, dtype=np.float32)
        if gray.min() < 0 or gray.max() > 65535:
            raise ValueError("integer pixels outside 0..65535 have no defined range; save as 8- or 16-bit")
        return np.repeat((gray / 65535.0)[..., None], 3, axis=2)
    if img.mode == "F":
        raise ValueError("32-bit float images have no defined range; save them as 8- or 16-bit")
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255


def pair_counts(labels: torch.Tensor) -> Tuple[int, int]:
    """``(genuine, impostor)``: how many unordered pairs of ``labels`` share an identity, and how many do not."""
    counts = torch.unique(labels, return_counts=True)[1]
    genuine = int((counts * (counts - 1) // 2).sum())
    return genuine, len(labels) * (len(labels) - 1) // 2 - genuine


def _write_atomic(path: Path, data: Any) -> None:
    """Write ``data`` (a state_dict or JSON text) next to ``path``, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder, so the rename is atomic
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            torch.save(data, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats (an infinite threshold) become ``None``."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fail(prog: str, message: str, status: int = 2) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return status


# --- arcface-train ----------------------------------------------------------------------------------------

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
        from .faces import synthetic_faces

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
        args.arch = args.arch or "small"
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


# --- arcface-verify ---------------------------------------------------------------------------------------

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
    args.arch = args.arch or saved.get("arch", "small")
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
            from .faces import synthetic_faces

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
    sys.exit(train_main())
