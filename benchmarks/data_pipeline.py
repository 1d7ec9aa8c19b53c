"""The data pipeline at scale: folders of photographs against the packed format, memory against N, the head.

Sub-commands (each prints a JSON line; ``benchmarks/data_pipeline.md`` has the commands and the results):

    python benchmarks/data_pipeline.py generate --n 20000 --out /tmp/faces20k      # PNGs, DIR/<identity>/<image>
    python benchmarks/data_pipeline.py scan --data /tmp/faces20k                    # cost of each scan check
    python benchmarks/data_pipeline.py throughput --data /tmp/faces20k --packed /tmp/faces20k.npy --workers 0 1 2
    python benchmarks/data_pipeline.py memory --data /tmp/faces20k                  # peak RSS, one subprocess
    python benchmarks/data_pipeline.py train-memory --data /tmp/faces20k --out /tmp/run  # arcface-train's peak RSS
    python benchmarks/data_pipeline.py head --classes 1000 10000 100000             # the margin head's memory

``generate`` renders ``--distinct`` synthetic faces (:func:`resnet_arcface.synthetic_faces`) as PNGs and fills
the rest of the ``--n`` files with hard links to them (``--copy`` for real copies): every file is a directory
entry of its own that the scan lists and a worker opens and decodes, which is what memory against N is about,
without rendering 200 k faces on a 2-core machine.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch


def machine() -> Dict[str, Any]:
    """The CPU, core count, versions and load average the numbers were measured with."""
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import PIL

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "pillow": PIL.__version__, "load_average": os.getloadavg()}


def generate(n: int, out: Path, size: int, identities: int, distinct: int, copy: bool) -> Dict[str, Any]:
    """``n`` PNG files under ``out/<identity>/``; ``distinct`` of them rendered, the rest linked or copied."""
    import shutil

    from PIL import Image

    from resnet_arcface import synthetic_faces

    tic = time.perf_counter()
    per = max(1, distinct // identities)
    pool: List[Path] = []
    (out / "_pool").mkdir(parents=True, exist_ok=True)  # hidden from no one: _pool is removed below
    for start in range(0, identities, 100):
        ids = min(100, identities - start)
        images, labels = synthetic_faces(ids, per, size=size, seed=start)
        for j, img in enumerate(images):
            path = out / "_pool" / f"{start}_{j}.png"
            Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(path)
            pool.append(path)
        if len(pool) >= distinct:
            break
    for i in range(n):
        folder = out / f"id{i % identities:06d}"
        if i < identities:
            folder.mkdir(exist_ok=True)
        target = folder / f"{i // identities:05d}.png"
        if not target.exists():
            (shutil.copyfile if copy else os.link)(pool[i % len(pool)], target)
    shutil.rmtree(out / "_pool")
    return {"files": n, "identities": identities, "distinct": len(pool), "size": size, "copy": copy,
            "seconds": round(time.perf_counter() - tic, 1)}


def scan(data: Path, size: int, repeats: int) -> Dict[str, Any]:
    """Seconds per file of FaceFolder's scan with each check (warm page cache: the second of two reads)."""
    from resnet_arcface.data.folders import CHECKS, FaceFolder

    FaceFolder(data, size, check="header")  # warms the page cache, so disk speed is not what is measured
    times: Dict[str, List[float]] = {c: [] for c in CHECKS}
    for _ in range(repeats):
        for check in CHECKS:
            tic = time.perf_counter()
            faces = FaceFolder(data, size, check=check)
            times[check].append((time.perf_counter() - tic) / len(faces))
    return {"files": len(faces), "us_per_file": {c: round(1e6 * statistics.median(t), 1) for c, t in times.items()},
            "samples_us": {c: [round(1e6 * s, 1) for s in t] for c, t in times.items()}}


def _iterate(dataset: Any, workers: int, batch: int, limit: int) -> float:
    """Images per second of a DataLoader over ``dataset`` (shuffled), ``limit`` images, after one batch."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False, generator=torch.Generator().manual_seed(0))
    seen, tic = 0, None
    for x, _ in loader:
        if tic is None:  # the first batch pays for starting the workers
            tic = time.perf_counter()
            continue
        seen += len(x)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - tic)


def throughput(data: Path, packed: Path, size: int, workers: List[int], batch: int, limit: int,
               repeats: int) -> Dict[str, Any]:
    """Images/s of folder decoding against the packed file, interleaved over ``repeats`` rounds."""
    from resnet_arcface.data.folders import FaceFolder
    from resnet_arcface.data.packed import PackedFaces

    sets = {"folder": FaceFolder(data, size, check="none"), "packed": PackedFaces(packed)}
    samples: Dict[str, List[float]] = {f"{k} workers={w}": [] for k in sets for w in workers}
    for _ in range(repeats):
        for kind, dataset in sets.items():
            for w in workers:
                samples[f"{kind} workers={w}"].append(_iterate(dataset, w, batch, limit))
    return {"images_per_s": {k: round(statistics.median(v)) for k, v in samples.items()},
            "samples": {k: [round(s) for s in v] for k, v in samples.items()}, "batch": batch, "limit": limit}


def _peak_child(code: str, **info: Any) -> Dict[str, Any]:
    """Run ``code`` (on one thread; it sets ``extra``) in a fresh interpreter: its peak RSS and that of its
    largest child (a DataLoader worker), in MB, its seconds, ``extra`` and ``info``."""
    script = ("import torch; torch.set_num_threads(1)\n" + code + "\nimport resource, json\n"
              "print(json.dumps({'self_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
              " 'workers_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, **extra}))")
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": round(time.perf_counter() - tic, 1),
            **info}


def memory(data: Path, size: int, workers: int, batch: int, eager: bool) -> Dict[str, Any]:
    """Peak RSS of one epoch over ``data`` through a DataLoader (or, with ``eager``, of read_image_folder)."""
    if eager:
        code = (f"from resnet_arcface.data.folders import read_image_folder\n"
                f"images, labels, names = read_image_folder({str(data)!r}, {size})\n"
                f"extra = {{'images': len(images)}}")
    else:
        code = (f"from torch.utils.data import DataLoader\n"
                f"from resnet_arcface.data.folders import FaceFolder\n"
                f"faces = FaceFolder({str(data)!r}, {size})\n"
                f"n = 0\n"
                f"for x, y in DataLoader(faces, batch_size={batch}, shuffle=True, num_workers={workers}):\n"
                f"    n += len(x)\n"
                f"extra = {{'images': n}}")
    return _peak_child(code, eager=eager, workers=workers)


def train_memory(data: Path, size: int, workers: int, batch: int, out: Path) -> Dict[str, Any]:
    """Peak RSS of ``arcface-train --data`` (small network, one epoch) in a fresh interpreter, and its workers'."""
    argv = ["--data", str(data), "--size", str(size), "--epochs", "1", "--batch-size", str(batch), "--workers",
            str(workers), "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    code = f"from resnet_arcface.cli.train import train_main\nextra = {{'status': train_main({argv!r})}}"
    return _peak_child(code, workers=workers, size=size)


def head(classes: List[int], dim: int, batch: int) -> List[Dict[str, Any]]:
    """Peak RSS of one SGD step of the ArcFace head alone (weight, gradient, momentum, logits) per class count."""
    rows = []
    for c in classes:
        code = (f"from resnet_arcface.learn.losses import MarginHead\n"
                f"import resource\n"
                f"base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
                f"head = MarginHead({dim}, {c}, loss='arcface', s=64.0, m=0.5)\n"
                f"opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)\n"
                f"e = torch.randn({batch}, {dim}, requires_grad=True)\n"
                f"for _ in range(2):\n"
                f"    loss = head(e, torch.randint(0, {c}, ({batch},)))\n"
                f"    opt.zero_grad(); loss.backward(); opt.step()\n"
                f"extra = {{'baseline_mb': base}}")
        result = _peak_child(code)
        weight_mb = c * dim * 4 / 2**20
        rows.append({"classes": c, "dim": dim, "batch": batch, "weight_mb": round(weight_mb, 1),
                     "logits_mb": round(batch * c * 4 / 2**20, 1),
                     "peak_over_baseline_mb": round(result["self_mb"] - result["baseline_mb"], 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--size", type=int, default=128)
    g.add_argument("--identities", type=int, default=1000)
    g.add_argument("--distinct", type=int, default=2000)
    g.add_argument("--copy", action="store_true")
    s = sub.add_parser("scan")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--repeats", type=int, default=3)
    t = sub.add_parser("throughput")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--packed", type=Path, required=True)
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--limit", type=int, default=2048, help="images timed per measurement")
    t.add_argument("--repeats", type=int, default=3)
    m = sub.add_parser("memory")
    m.add_argument("--data", type=Path, required=True)
    m.add_argument("--size", type=int, default=128)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--batch", type=int, default=128)
    m.add_argument("--eager", action="store_true", help="read_image_folder: every image decoded into one tensor")
    r = sub.add_parser("train-memory")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--size", type=int, default=32)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--out", type=Path, required=True)
    h = sub.add_parser("head")
    h.add_argument("--classes", type=int, nargs="+", default=[1000, 10000, 100000])
    h.add_argument("--dim", type=int, default=512)
    h.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "generate":
        result: Any = generate(args.n, args.out, args.size, args.identities, args.distinct, args.copy)
    elif args.command == "scan":
        result = scan(args.data, args.size, args.repeats)
    elif args.command == "throughput":
        result = throughput(args.data, args.packed, args.size, args.workers, args.batch, args.limit, args.repeats)
    elif args.command == "memory":
        result = memory(args.data, args.size, args.workers, args.batch, args.eager)
    elif args.command == "train-memory":
        result = train_memory(args.data, args.size, args.workers, args.batch, args.out)
    else:
        result = head(args.classes, args.dim, args.batch)
    print(json.dumps({"command": args.command, "result": result, "machine": machine()}))


if __name__ == "__main__":
    main()
