"""Training throughput (images per second) of the small network and of GFPGAN's configuration.

Runs the package's own training loop (:func:`resnet_arcface.learn.training.fit`, ArcFace head, SGD) on random
images, so preprocessing, flips, the margin head and the optimizer step are all counted. Each measurement
trains ``--warmup`` epochs and then one timed epoch; the configurations are interleaved over ``--repeats``
rounds and the median is reported, so a machine shared with other jobs slows all of them alike and the
*ratio* between them stays meaningful even when the absolute numbers do not.

    python benchmarks/train_bench.py                      # CPU, and CUDA when present
    python benchmarks/train_bench.py --device cpu --threads 2 --out benchmarks/results/train_cpu.json
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from resnet_arcface import ResNetArcFace, __version__, resnet_arcface_small
from resnet_arcface.learn.training import fit

#: name -> (builder, input side, batch size on CPU, batch size on CUDA, images per epoch on CPU / CUDA).
CONFIGS = {
    "small @ 32 px": (lambda: resnet_arcface_small(), 32, 128, 512, (512, 16384)),
    "GFPGAN resnet_arcface18 @ 128 px": (lambda: ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=False), 128, 32, 128,
                                         (64, 4096)),
}

def machine(device: torch.device, threads: int) -> Dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was (load average)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "resnet_arcface": __version__, "device": str(device),
            "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def measure(name: str, device: torch.device, warmup: int) -> float:
    """Images per second of one timed epoch of ``fit``, after ``warmup`` epochs."""
    build, size, cpu_batch, cuda_batch, (cpu_n, cuda_n) = CONFIGS[name]
    cuda = device.type == "cuda"
    n, batch = (cuda_n, cuda_batch) if cuda else (cpu_n, cpu_batch)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=generator)
    labels = torch.arange(n) % 64  # 64 identities: the head's size barely matters next to the network
    torch.manual_seed(0)
    history = fit(build(), images, labels, epochs=warmup + 1, batch_size=batch, seed=0, device=device, progress=False)
    return history["images_per_s"][-1]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, plus CUDA when present (default)")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is kept")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before the timed one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    results = []
    for device in devices:
        samples: Dict[str, List[float]] = {name: [] for name in CONFIGS}
        info = machine(device, args.threads)
        for _ in range(args.repeats):
            for name in CONFIGS:  # interleaved: a burst of load elsewhere hits every configuration
                samples[name].append(measure(name, device, args.warmup))
        info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        rows = {name: {"images_per_s": statistics.median(v), "samples": v,
                       "batch_size": CONFIGS[name][3 if device.type == "cuda" else 2]} for name, v in samples.items()}
        results.append({"machine": info, "results": rows})
        for name, row in rows.items():
            print(f"{str(device):5} {name:34} {row['images_per_s']:10,.1f} img/s  (batch {row['batch_size']}, "
                  f"samples {', '.join(f'{s:.1f}' for s in row['samples'])})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": results},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
