"""What the commands ``arcface-train`` and ``arcface-verify`` share: flags, errors, safe writes.

Bad input (a missing folder, an unreadable image, a flag out of range) is answered with one line that
names the file or flag and the fix, exit status 2, and nothing written: every input is read and checked
before ``--out`` is touched, and each file there is replaced atomically (written next to its final name,
then renamed), so an interrupted run leaves the last finished epoch, complete, for ``--resume``.
"""
import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Tuple

import torch

from ..device import pick_device
from ..models.registry import create_model, list_models, model_config
from ..nn.model import ResNetArcFace

#: Architectures the commands build (the registry's names, :func:`resnet_arcface.list_models`), with their
#: default input size.
ARCHS = {name: model_config(name)["input_size"] for name in list_models()}
#: The network ``--arch`` defaults to: the small one, which trains in minutes on a CPU.
DEFAULT_ARCH = "resnet_arcface_small"
#: Names that runs of version 0.1 wrote into metrics.json, read as today's (``--arch`` accepts only the latter).
_OLD_ARCH_NAMES = {"small": "resnet_arcface_small"}
#: Held-out synthetic identities come from other seeds than training's (disjoint identities, open set):
#: ``arcface-train`` validates on ``seed + 1000``, ``arcface-verify`` defaults to ``seed + 2000``.
VAL_SEED_OFFSET, TEST_SEED_OFFSET = 1000, 2000
FILES = ("checkpoint.pt", "weights.pt", "metrics.json")


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
    parser.add_argument("--arch", choices=list_models(), help=f"network (default: {DEFAULT_ARCH})")
    parser.add_argument("--size", type=_positive(int), metavar="PX",
                        help="input side in pixels, a multiple of 16 (default: "
                             + ", ".join(f"{name} {size}" for name, size in ARCHS.items()) + ")")
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


def saved_arch(name: str) -> str:
    """The registry name of an architecture recorded in a metrics.json (version 0.1 wrote ``"small"``)."""
    return _OLD_ARCH_NAMES.get(name, name)


def build_model(arch: str, size: int) -> ResNetArcFace:
    """The registry's network ``arch`` (``resnet_arcface18`` is GFPGAN's configuration) at input side ``size``."""
    if arch not in ARCHS:
        raise UsageError(f"--arch {arch}: unknown network; choose one of {list_models()}.")
    try:
        return create_model(arch, input_size=size)
    except ValueError as err:
        raise UsageError(f"--size {size}: {err}") from None


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
