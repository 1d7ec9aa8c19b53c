"""``arcface-weights``: rebuild the weights that ship in the package (what ``make weights`` runs)."""
import argparse
from pathlib import Path
from typing import List, Optional

import torch

from ..learn.recipe import LOSSES, REQUIREMENT, build
from ..models.shipped import WEIGHTS_DIR


def main(argv: Optional[List[str]] = None) -> None:
    """``arcface-weights``: rebuild the shipped weights (what ``make weights`` runs).

    A console script rather than ``python -m resnet_arcface.models.shipped``: the package imports this module
    first, so ``-m`` would run it a second time (runpy warns about exactly that).
    """
    parser = argparse.ArgumentParser(prog="arcface-weights", description=build.__doc__)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"folder to write to (default: {WEIGHTS_DIR})")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated, the shipped one first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = build(args.out, losses=tuple(args.losses.split(",")), progress=True)
    tar = report["results"][report["loss"]]["tar_at_far"][str(REQUIREMENT["far"])]
    print(f"wrote {args.out}: TAR {tar:.3f} at FAR {REQUIREMENT['far']:g} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
