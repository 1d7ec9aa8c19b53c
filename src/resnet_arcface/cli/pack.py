"""``arcface-pack``: decode a folder of photographs once into the packed format that training reads fast.

    arcface-pack DIR OUT --size 128 --workers 2
    arcface-train --data OUT --size 128 ...

See :mod:`resnet_arcface.data.packed` for the format and why.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..data.folders import CHECKS, FaceFolder
from ..data.packed import pack_faces
from .common import _fail, _Parser, _positive


def _pack_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-pack", description=(
        "Decode DIR/<identity>/<image> once, gray at --size px, into the packed folder OUT (images.npy, "
        "labels.npy, meta.json) that arcface-train --data OUT reads without decoding."))
    parser.add_argument("data", type=Path, metavar="DIR", help="one sub-folder of images per identity")
    parser.add_argument("out", type=Path, metavar="OUT", help="the packed folder to write (must not exist)")
    parser.add_argument("--size", type=_positive(int), required=True, metavar="PX",
                        help="side of the packed images: the --size you will train at")
    parser.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes (default: 0, this one)")
    parser.add_argument("--check", choices=CHECKS, default="header",
                        help="what the scan checks before decoding (default: header)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``arcface-pack``; returns the exit status."""
    args = _pack_parser().parse_args(argv)
    prog = "arcface-pack"
    if args.workers < 0:
        return _fail(prog, f"--workers {args.workers}: expected 0 (decode in this process) or more.")
    if args.out.exists():
        return _fail(prog, f"OUT {args.out} already exists; choose a new folder, or remove it first.")
    try:
        faces = FaceFolder(args.data, args.size, check=args.check)
        packed = pack_faces(faces, args.out, workers=args.workers, progress=not args.no_progress)
    except ValueError as err:  # UnreadableImageError too: one line naming the file
        return _fail(prog, str(err))
    except KeyboardInterrupt:
        return _fail(prog, "interrupted; nothing written", 130)
    print(f"{prog}: wrote {packed.path}: {len(packed)} images of {len(packed.names)} identities at {packed.size} px "
          f"({packed.size * packed.size * len(packed) / 2**20:,.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
