"""``arcface-weights``: rebuild the weights that ship in the package (what ``make weights`` runs)."""
import argparse
from pathlib import Path
from typing import List, Optional

import torch

from ..learn.recipe import LOSSES, REQUIREMENT, SEEDS, add_seeds, build
from ..models.shipped import WEIGHTS_DIR


def main(argv: Optional[List[str]] = None) -> None:
    """``arcface-weights``: rebuild the shipped weights (what ``make weights`` runs).

    A console script rather than ``python -m resnet_arcface.models.shipped``: the package imports this module
    first, so ``-m`` would run it a second time (runpy warns about exactly that).
    """
    parser = argparse.ArgumentParser(prog="arcface-weights", description=build.__doc__)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"folder to write to (default: {WEIGHTS_DIR})")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated, the shipped one first")
    parser.add_argument("--seeds", type=seed_list, default=SEEDS,
                        help=f"training seeds, comma-separated; the first one's network is shipped (default: "
                             f"{','.join(map(str, SEEDS))})")
    parser.add_argument("--add-seeds", type=seed_list, metavar="SEEDS",
                        help="train every loss of the existing OUT/synthetic.json from these seeds too and add their "
                             "results to it; the weights are left as they are")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.add_seeds:
        if not (args.out / "synthetic.json").is_file():
            parser.error(f"--add-seeds needs an existing {args.out / 'synthetic.json'}: run without it first")
        report = add_seeds(args.out, seeds=args.add_seeds, progress=True)
        print(f"wrote {args.out / 'synthetic.json'}: results of seeds {', '.join(report['seeds'])}")
        return
    report = build(args.out, losses=tuple(args.losses.split(",")), seeds=args.seeds, progress=True)
    tar = report["results"][report["loss"]]["tar_at_far"][str(REQUIREMENT["far"])]
    print(f"wrote {args.out}: TAR {tar:.3f} at FAR {REQUIREMENT['far']:g} in {report['seconds']:.0f} s")


def seed_list(text: str) -> tuple:
    """``"0,1,2"`` as ``(0, 1, 2)``; argparse turns the ValueError of a bad one into a usage error."""
    seeds = tuple(int(part) for part in text.split(","))
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(text)
    return seeds


if __name__ == "__main__":
    main()
