"""Benchmark: each fused operator against its unfused reference (layerprobe/probing/ops/reference.py), time and memory.

    python benchmarks/ops.py --library results/ops/layerprobe_ops.so   # from: snakemake results/ops/layerprobe_ops.so
    python benchmarks/ops.py --build                                  # or build into benchmarks/out/ first

Each measurement runs in a fresh spawned child process (MALLOC_ARENA_MAX=1), which times one call
after a warm-up call and measures the peak resident-set growth during it (benchmarks/engine.py's
PeakMemory: RSS sampled every millisecond plus the kernel's high-water mark), so both columns see
every allocation, torch's included. Sizes: head V=20, N=10,000, F=1,024, C=10 and C=1,000;
interpolated unit B=10,000, 1,024→1,024, K=21; noisy unit B=1,000, 1,024→1,024, K=4 and K=16.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from layerprobe.probing import ops  # noqa: E402
from layerprobe.probing.noise import seeds_for  # noqa: E402
from layerprobe.probing.ops import build, reference  # noqa: E402

LIBRARY = "results/ops/layerprobe_ops.so"  # where the workflow's rule build_ops puts it

CASES = {
    "head C=10": ("head", dict(v=20, n=10_000, f=1024, c=10)),
    "head C=1000": ("head", dict(v=20, n=2_000, f=1024, c=1000)),
    "interp K=21": ("interp", dict(b=10_000, i=1024, o=1024, k=21)),
    "noisy K=4": ("noisy", dict(b=1_000, i=1024, o=1024, k=4)),
    "noisy K=16": ("noisy", dict(b=1_000, i=1024, o=1024, k=16)),
}


def inputs(kind: str, s: dict):
    g = torch.Generator().manual_seed(0)
    if kind == "head":
        return (
            torch.randn(s["v"], s["n"], s["f"], generator=g),
            torch.randn(s["c"], s["f"], generator=g) / 32,
            torch.randn(s["c"], generator=g),
            torch.randint(0, s["c"], (s["n"],), generator=g),
            torch.randint(0, s["c"], (s["n"],), generator=g),
        )
    x, w, b = torch.randn(s["b"], s["i"], generator=g), torch.randn(s["o"], s["i"], generator=g), torch.randn(s["o"])
    if kind == "interp":
        return x, w, b, torch.randn(s["o"], s["i"], generator=g), b * 0.5, torch.linspace(0, 1, s["k"]), "relu"
    return x, w, b, torch.rand(s["k"], generator=g), seeds_for(1, s["k"]), 0


def _child(library: str, kind: str, sizes: dict, fused: bool, threads: int, device: str = "cpu"):
    from engine import PeakMemory, timed  # benchmarks/engine.py

    torch.set_num_threads(threads)
    ops.load(library)
    name = {"head": "head_eval", "interp": "interp_unit", "noisy": "noisy_unit"}[kind]
    fn = getattr(ops, name) if fused else getattr(reference, f"{name}_reference")
    device = torch.device(device)
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in inputs(kind, sizes))
    with torch.no_grad():
        fn(*args)  # warm-up
        with PeakMemory(device) as peak:
            seconds, _ = timed(lambda: fn(*args), device)
    return seconds, peak.mb


def measure(library: str, kind: str, sizes: dict, fused: bool, threads: int, device: str = "cpu"):
    os.environ["MALLOC_ARENA_MAX"] = "1"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, library, kind, sizes, fused, threads, device).result()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", default=LIBRARY, help="the built layerprobe_ops.so")
    parser.add_argument("--build", action="store_true", help="build the library into benchmarks/out/ first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the operators run (cuda: peak = max_memory_allocated above the inputs)",
    )
    args = parser.parse_args(argv)
    library = args.library
    if args.build:
        library = str(build.build_ops(Path(__file__).parent / "out" / "layerprobe_ops.so"))
    if not Path(library).is_file():
        parser.error(f"{library} does not exist: build it (--build, or snakemake {LIBRARY})")
    print(
        f"torch {torch.__version__}, {args.threads} threads, device {args.device}; peak = "
        + ("RSS growth" if args.device == "cpu" else "CUDA allocation above the inputs")
        + " during one call (fresh process)"
    )
    header = ("case", "fused_s", "reference_s", "speedup", "fused_peak_mb", "reference_peak_mb")
    print("  ".join(f"{h:>17}" for h in header))
    for name in args.cases.split(","):
        kind, sizes = CASES[name]
        fs, fm = measure(library, kind, sizes, True, args.threads, args.device)
        rs, rm = measure(library, kind, sizes, False, args.threads, args.device)
        print(
            "  ".join(f"{c:>17}" for c in (name, f"{fs:.3g}", f"{rs:.3g}", f"{rs / fs:.2f}", f"{fm:.0f}", f"{rm:.0f}")),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
