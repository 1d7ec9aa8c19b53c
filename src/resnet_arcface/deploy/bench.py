"""Benchmark the inference backends: ``python -m resnet_arcface.deploy.bench``.

Eager float32 and every backend of :func:`resnet_arcface.deploy.inference.optimize` are timed in ONE
interleaved run (round after round, each round visiting every batch size and backend once), so
that a machine whose load changes (a laptop, a shared server) slows all of them alike and the
ratios stay fair. Each round also times a square ``torch.mm``: the same process's matrix-multiply
throughput is the practical peak the network's GFLOP/s is compared with (a roofline-style ceiling
[Williams et al. 2009] measured rather than taken from a data sheet).

It reports per backend and batch size: milliseconds per batch (median over rounds), images per
second, speed-up over eager (ratio of medians), GFLOP/s (2 x the multiply-adds counted from the
layers' shapes, divided by time) and its fraction of the ``torch.mm`` peak; per backend the cold
start (building, exporting or compiling, and the first call), the largest difference from eager
float32 relative to its largest value (the exactness measure, on faces) and the smallest cosine. It prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .inference import BACKENDS, available_backends, check_faces, export_for_onnx_runtime, max_error, onnx_session, optimize
from ..data.transforms import resolve_cfg
from ..device import model_device
from ..models.registry import create_model, list_models

__all__ = ["STAGES", "stage_times", "multiply_adds", "machine_info", "matmul_gflops", "run_benchmark", "format_table", "main"]


def multiply_adds(model: nn.Module, input_size: Optional[int] = None) -> Dict[str, int]:
    """Multiply-adds per image of every convolution and Linear, keyed by module name, from their shapes.

    ``input_size`` defaults to the model's (its ``pretrained_cfg``).

    A convolution producing ``C_out x H' x W'`` values from ``C_in / groups x k x k`` inputs each costs
    ``C_out H' W' C_in k^2 / groups``; a Linear ``in x out``. BatchNorm, PReLU, pooling and the residual
    additions are a few operations per value, under 1 % here, and not counted (the usual convention).
    """
    counts: Dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            per_output = module.weight[0].numel()  # C_in/groups * k * k for a conv, in_features for a Linear
            counts[name] = counts.get(name, 0) + output[0].numel() * per_output
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        size = resolve_cfg(model).input_size if input_size is None else input_size
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counts


#: The model's top-level children in the order ``forward`` runs them (dropout is skipped: identity in eval).
STAGES = ("conv1", "bn1", "prelu", "maxpool", "layer1", "layer2", "layer3", "layer4", "bn4", "fc5", "bn5")


def stage_times(model: nn.Module, x: torch.Tensor, rounds: int = 3) -> Dict[str, float]:
    """Milliseconds per forward pass spent in each stage of :data:`STAGES`, from ``torch.profiler``.

    Forward hooks open a ``record_function("stage::<name>")`` range around each stage, so the profiler's
    table has one row per stage (the operators inside are summed into it). One untimed call first.
    Note: the stem's ``prelu`` module is called once; the blocks' own PReLUs are inside their stages.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    open_ranges: Dict[str, record_function] = {}

    def enter(name: str) -> Callable:
        def hook(_module: nn.Module, _inputs) -> None:
            open_ranges[name] = record_function(f"stage::{name}").__enter__()
        return hook

    def leave(name: str) -> Callable:
        def hook(_module: nn.Module, _inputs, _output) -> None:
            open_ranges.pop(name).__exit__(None, None, None)
        return hook

    handles = []
    for name in STAGES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave(name))]
    try:
        with torch.inference_mode():
            model(x)
            with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(rounds):
                    model(x)
    finally:
        for h in handles:
            h.remove()
    totals = {e.key.split("::", 1)[1]: e.cpu_time_total / rounds / 1e3
              for e in prof.key_averages() if e.key.startswith("stage::")}
    return {name: totals[name] for name in STAGES if name in totals}


class _quiet_stderr:
    """Silence file descriptor 2 (the profiler's C++ library prints start/stop markers there)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self._saved, self._null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)


def machine_info(threads: int) -> Dict[str, object]:
    """What the numbers depend on: CPU model and vector extensions, cores, threads, library versions, load."""
    flags: List[str] = []
    model_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model_name in ("", platform.machine()):
                    model_name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
                             if f in present]
                    break
    except OSError:  # not Linux: the model name from platform is what we have
        pass
    info: Dict[str, object] = {
        "cpu": model_name, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "threads": threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_gflops(n: int = 1024, device: torch.device | str = "cpu") -> Callable[[], float]:
    """A callable that times one ``n x n`` float32 ``torch.mm`` and returns its GFLOP/s."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))

    def run() -> float:
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        return 2 * n ** 3 / (time.perf_counter() - start) / 1e9
    run()  # warm-up: thread pool, allocator
    return run


def run_benchmark(model: nn.Module, backends: Sequence[str], batch_sizes: Sequence[int] = (1, 8, 32),
                  repeats: int = 7, threads: Optional[int] = None, fc5_int8: bool = True,
                  log: Callable[[str], None] = print) -> Dict[str, object]:
    """Time ``backends`` against eager in one interleaved run; see the module docstring for what is reported.

    Args:
        model: An eval-mode ResNetArcFace (weights do not change the speed).
        backends: Backend names from :data:`resnet_arcface.deploy.inference.BACKENDS`; eager is always included.
        batch_sizes: Batch sizes to time.
        repeats: Rounds; each round times every (batch size, backend) once.
        threads: ``torch.set_num_threads`` (and ONNX Runtime's threads). Default: leave torch's setting.
        fc5_int8: Also time ONNX Runtime with ``fc5`` dynamically quantised to int8 (not exact; see compress).
        log: Where progress lines go.

    Returns:
        A JSON-ready dict: ``machine``, ``config``, ``peak_gflops``, ``backends`` (cold start, max error, cosine)
        and ``results`` (one row per backend and batch size).
    """
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None  # how busy the machine was
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    device = model_device(model)
    size = resolve_cfg(model).input_size
    macs = sum(multiply_adds(model, size).values())
    names = ["eager"] + [b for b in backends if b != "eager"]
    runners: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    meta: Dict[str, Dict[str, object]] = {}
    for name in names:
        log(f"building {name} ...")
        embedder = optimize(model, name, threads=threads)
        runners[name] = embedder
        meta[name] = {"cold_start_s": embedder.setup_s, "min_cosine": embedder.min_cosine,
                      "max_error": embedder.max_error, "exact": embedder.exact}
    if fc5_int8 and "onnxruntime" in names:
        runners["onnxruntime+int8 fc5"], meta["onnxruntime+int8 fc5"] = _ort_int8_fc5(model, threads)
    peak = matmul_gflops(device=device)
    inputs = {n: torch.randn(n, 1, size, size, device=device) for n in batch_sizes}
    times: Dict[tuple, List[float]] = {(r, n): [] for r in runners for n in batch_sizes}
    peaks: List[float] = []
    log(f"timing {len(runners)} variants x batch {list(batch_sizes)} x {repeats} rounds, {threads} threads ...")
    for name in runners:  # one untimed call per shape: ONNX Runtime and compile plan per shape
        for n in batch_sizes:
            runners[name](inputs[n])
    for _ in range(repeats):
        peaks.append(peak())
        for n in batch_sizes:
            for name, run in runners.items():
                _sync(device)
                start = time.perf_counter()
                run(inputs[n])
                _sync(device)
                times[name, n].append(time.perf_counter() - start)
    peak_gflops = statistics.median(peaks)
    rows = []
    for n in batch_sizes:
        eager = statistics.median(times["eager", n])
        for name in runners:
            t = statistics.median(times[name, n])
            gflops = 2 * macs * n / t / 1e9
            rows.append({"backend": name, "batch": n, "ms": 1e3 * t, "ms_min": 1e3 * min(times[name, n]),
                         "images_per_s": n / t, "speedup": eager / t, "gflops": gflops,
                         "fraction_of_mm_peak": gflops / peak_gflops})
    config = {k: getattr(model, k, None) for k in ("widths", "input_size", "embedding_dim", "use_se", "layers")}
    machine = machine_info(threads)
    machine["load_average_end"], machine["load_average"] = machine["load_average"], load_start
    return {"machine": machine,
            "config": {**config, "multiply_adds_per_image": macs, "repeats": repeats,
                       "statistic": "median over rounds"},
            "peak_gflops": peak_gflops, "peak_gflops_all": peaks, "backends": meta, "results": rows}


def _ort_int8_fc5(model: nn.Module, threads: int):
    """ONNX Runtime with fc5 dynamically quantised: a runner and its metadata (measured on faces, not exact)."""
    from .compress import quantize_fc5_onnx

    start = time.perf_counter()
    session = onnx_session(quantize_fc5_onnx(export_for_onnx_runtime(model)), threads)
    cold = time.perf_counter() - start
    faces = check_faces(model)
    with torch.inference_mode():
        ref = model(faces).float().cpu()
    out = torch.from_numpy(session.run(None, {"faces": faces.cpu().numpy()})[0])
    cosine = torch.nn.functional.cosine_similarity(out, ref, dim=1).min().item()

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"faces": x.cpu().numpy()})[0])
    return run, {"cold_start_s": cold, "min_cosine": cosine, "max_error": max_error(out, ref), "exact": False}


def format_table(report: Dict[str, object]) -> str:
    """The report as a Markdown table (the one benchmarks/README.md keeps)."""
    m, meta = report["machine"], report["backends"]
    lines = [f"Machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'}), {m['logical_cpus']} logical CPUs, "
             f"{m['threads']} threads; torch {m['torch']}, onnxruntime {m['onnxruntime']}; load average "
             f"{m['load_average'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end.",
             f"Model: {report['config']['multiply_adds_per_image'] / 1e9:.3f} G multiply-adds per image. "
             f"Same-run torch.mm peak: {report['peak_gflops']:.1f} GFLOP/s (median of rounds).", "",
             "| backend | batch | ms / batch | images/s | × eager | GFLOP/s | of mm peak | cold start s | max error "
             "| min cos |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        b = meta[r["backend"]]
        cos = "-" if b["min_cosine"] is None else f"{b['min_cosine']:.6f}"
        err = "-" if b.get("max_error") is None else f"{b['max_error']:.1e}"  # older reports lack it
        lines.append(f"| {r['backend']} | {r['batch']} | {r['ms']:.1f} | {r['images_per_s']:.1f} | "
                     f"{r['speedup']:.2f} | {r['gflops']:.1f} | {r['fraction_of_mm_peak']:.2f} | "
                     f"{b['cold_start_s']:.1f} | {err} | {cos} |")
    return "\n".join(lines)


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: ``python -m resnet_arcface.deploy.bench --help``."""
    parser = argparse.ArgumentParser(prog="python -m resnet_arcface.deploy.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list_models(), default="resnet_arcface18",
                        help="the architecture, by its registry name: resnet_arcface18 is GFPGAN's configuration "
                             "(default: resnet_arcface18)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default: 7)")
    parser.add_argument("--backends", nargs="+", default=None,
                        help=f"backends to time against eager, from {list(BACKENDS)} (default: every exact one "
                             "available, plus bf16 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--no-fc5-int8", action="store_true", help="skip ONNX Runtime with int8 fc5")
    parser.add_argument("--json", default="bench.json", help="where to write the report (default: bench.json)")
    parser.add_argument("--warm-compile-cache", action="store_true",
                        help="let torch.compile reuse its on-disk cache (default: an empty one, so that the "
                             "reported cold start is a real first compile)")
    args = parser.parse_args(argv)
    fresh_cache = None
    if not args.warm_compile_cache:  # Inductor caches compiled graphs on disk; a second run would look fast
        import tempfile

        fresh_cache = tempfile.mkdtemp(prefix="bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh_cache

    torch.manual_seed(0)
    model = create_model(args.model).to(args.device).eval()
    status = available_backends(args.device)
    if args.backends is None:
        args.backends = [b for b in BACKENDS if status[b] is None and (b != "bf16" or args.device == "cuda")]
    for b in args.backends:
        if b not in BACKENDS:
            parser.error(f"unknown backend {b!r}; choose from {list(BACKENDS)}")
        if status[b] is not None:
            parser.error(f"backend {b!r} is unavailable here: {status[b]}")
    report = run_benchmark(model, args.backends, args.batch_sizes, args.repeats, args.threads,
                           fc5_int8=not args.no_fc5_int8 and args.device == "cpu")
    report["config"]["model"] = args.model
    report["config"]["compile_cache"] = "warm (reused)" if args.warm_compile_cache else "empty (a real first compile)"
    print(format_table(report))
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json}")
    if fresh_cache:
        import shutil

        shutil.rmtree(fresh_cache, ignore_errors=True)


if __name__ == "__main__":
    main()
