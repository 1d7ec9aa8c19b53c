"""Verification time and peak memory against the number of faces N: blocked histogram, exact ROC, one product.

For each N and embedding width D, three methods run on the same random unit embeddings (10 images per
identity, each an identity centre plus noise, so genuine pairs score higher, with overlap), each in a fresh
process so that its peak resident memory (``resource.getrusage(...).ru_maxrss``; tracemalloc does not see
torch's allocations) is its own:

- ``blocked``: ``resnet_arcface.eval.chunked.pair_histogram`` and the numbers read from its ROC, what
  ``evaluate_embeddings`` does above ``EXACT_MAX_PAIRS`` pairs;
- ``exact``: ``evaluate_embeddings(..., exact=True)``, the full Gram matrix and every score sorted, the only
  path before (run up to ``--exact-max`` faces: it needs about 75 bytes a pair);
- ``product``: the ``N x N`` matrix product ``e @ e.T`` alone, in the same blocks of rows, results discarded:
  the time that "near one matrix product" is measured against (above N = 5,000, one block of rows in 8 is
  timed and the time scaled to all rows; every block costs the same).

The methods of one size run one after the other, so load from elsewhere hits them alike; compare times as
ratios within a size. The JSON has every sample, the machine, and the load average before and after.

    python benchmarks/verification.py --threads 1 --json benchmarks/results/verification_cpu.json
    python benchmarks/verification.py --device cuda --sizes 20000 50000 200000   # on a GPU: memory is the GPU's
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List

METHODS = ("blocked", "exact", "product")


def _embeddings(n: int, dim: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(n + dim)
    labels = torch.arange(n) // 10  # 10 images per identity
    centres = torch.randn(n // 10 + 1, dim, generator=g)
    # Impostor cosines spread about 1 / sqrt(D); noise of variance sqrt(D) / 3 - 1 puts the genuine ones near
    # 3 / sqrt(D), so the two overlap at any D as a real network's do, and the histogram's bounds are not 0.
    noise = max(dim ** 0.5 / 3 - 1, 0.0) ** 0.5
    return F.normalize(centres[labels] + noise * torch.randn(n, dim, generator=g), dim=1), labels


def child(method: str, n: int, dim: int, threads: int, device: str) -> Dict[str, Any]:
    """Run one method once in this (fresh) process; its time, peak memory and results."""
    import torch

    from resnet_arcface.eval.chunked import BLOCK_SCORES, pair_histogram
    from resnet_arcface.eval.verify import evaluate_embeddings, summarize_roc

    torch.set_num_threads(threads)
    e, labels = _embeddings(n, dim)
    e = e.to(device)
    cuda = e.is_cuda
    if cuda:  # warm up cuBLAS and the histogram kernel, so their set-up is not timed
        pair_histogram(e[:64], labels[:64])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before_kb = torch.cuda.memory_allocated() / 1024
    else:
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # high-water mark so far (KB on Linux)
    out: Dict[str, Any] = {}
    start = time.perf_counter()
    if method == "blocked":
        histogram = pair_histogram(e, labels)
        out["result"] = summarize_roc(*histogram.roc())
    elif method == "exact":
        out["result"] = evaluate_embeddings(e, labels, exact=True)
    else:
        # Every block of rows costs the same, so above 5,000 faces one block in 8 is timed and the time scaled
        # to all N rows: the 50,000 x 50,000 product alone would take most of the benchmark's budget.
        rows = max(1, BLOCK_SCORES // n)
        timed = [r0 for r0 in range(0, n, rows * (1 if n <= 5000 else 8)) if r0 + rows <= n] or [0]
        for r0 in timed:
            e[r0:r0 + rows] @ e.t()
        out["sampled_rows"] = min(len(timed) * rows, n)
    if cuda:
        torch.cuda.synchronize()
    out["seconds"] = time.perf_counter() - start
    if method == "product":
        out["seconds"] *= n / out["sampled_rows"]
    if cuda:  # GPU memory: torch's allocator is the whole story there
        peak_kb = torch.cuda.max_memory_allocated() / 1024
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(peak_mb=peak_kb / 1024, added_mb=(peak_kb - before_kb) / 1024)
    if method == "blocked":
        out["bounds"] = histogram.error_bounds()
    return out


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 50000], metavar="N")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512], metavar="D")
    parser.add_argument("--exact-max", type=int, default=5000, metavar="N",
                        help="largest N for the exact path (about 75 bytes a pair: 0.9 GB at 5,000, 3.7 GB at 10,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: then memory is the GPU's (torch's allocator) "
                        "and the exact path is left out (it sorts on the CPU)")
    parser.add_argument("--json", metavar="FILE", help="write every measurement here")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, dim = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(child(method, n, dim, args.threads, args.device)))
        return
    if args.device != "cpu":
        args.exact_max = 0

    import torch

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    runs: List[Dict[str, Any]] = []
    load_before, start = _load(), time.perf_counter()
    print("| N | D | pairs | blocked s | exact s | product s | blocked / product | blocked MB added (peak) | "
          "exact MB added | max abs diff vs exact (AUC, TAR@1e-3) | stated bound (AUC, TAR@1e-3) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for dim in args.dims:
            row: Dict[str, Any] = {"n": n, "dim": dim, "pairs": n * (n - 1) // 2}
            for method in METHODS:
                if method == "exact" and n > args.exact_max:
                    continue
                done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--device",
                                       args.device, "--child", method, str(n), str(dim)],
                                      env=env, capture_output=True, text=True, check=True)
                row[method] = json.loads(done.stdout)
            runs.append(row)
            b, x, p = row["blocked"], row.get("exact"), row["product"]
            diff = bound = "n/a"
            if x:
                d_auc = abs(b["result"]["auc"] - x["result"]["auc"])
                d_tar = abs(b["result"]["tar_at_far"][str(1e-3)] - x["result"]["tar_at_far"][str(1e-3)])
                diff = f"{d_auc:.1e}, {d_tar:.1e}"
            bound = f"{b['bounds']['auc']:.1e}, {b['bounds']['tar_at_far'][str(1e-3)]:.1e}"
            print(f"| {n:,} | {dim} | {row['pairs']:,} | {b['seconds']:.2f} | "
                  f"{x['seconds'] if x else float('nan'):.2f} | {p['seconds']:.2f} | {b['seconds'] / p['seconds']:.2f} | "
                  f"{b['added_mb']:.0f} ({b['peak_mb']:.0f}) | {x['added_mb'] if x else float('nan'):.0f} | {diff} | {bound} |", flush=True)
    machine = {"nproc": os.cpu_count(), "torch": torch.__version__, "device": args.device, "python": platform.python_version(),
               "processor": platform.processor() or platform.machine(), "threads": args.threads,
               "load_before": load_before, "load_after": _load(), "seconds": time.perf_counter() - start,
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    print(json.dumps(machine))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
