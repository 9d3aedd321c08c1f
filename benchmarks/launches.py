"""Kernel launches and host syncs of a call, counted on any device (a GPU is not needed to count them).

A *launch* is one compute operator reaching a backend kernel: every aten operator seen by a
TorchDispatchMode except those that launch nothing — views and reshapes (their output aliases their
input) and bare allocations (`empty`). A *host sync* is a point where the host waits for a device
value: `.item()`, `.tolist()`, `bool(t)`, `int(t)`, `float(t)`, `.numpy()` (seen as Python calls by a
TorchFunctionMode, since `.tolist()` never reaches the dispatcher on the CPU), and any
`aten._local_scalar_dense` that none of those explains. Operators on meta tensors (shapes only)
launch nothing.

    python benchmarks/launches.py --case c --quick   # the engine's and the loop's operators, by count
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten
# Allocations and storage aliasing: no kernel runs (`_unsafe_view` is a view its schema does not mark).
NO_KERNEL = {
    aten.empty.memory_format,
    aten.empty_strided.default,
    aten.empty_like.default,
    aten.new_empty.default,
    aten.new_empty_strided.default,
    aten.set_.source_Storage,
    aten.set_.source_Storage_storage_offset,
    aten._unsafe_view.default,
    aten.lift_fresh.default,
}
SYNCS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
}


@dataclass
class Counts:
    launches: int = 0
    syncs: int = 0
    operators: Counter = field(default_factory=Counter)  # launches by operator name


class _Dispatch(TorchDispatchMode):
    def __init__(self, counts: Counts, python: _Python):
        super().__init__()
        self.counts, self.python = counts, python

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten._local_scalar_dense.default:
            if not self.python.inside:  # a sync no Python call explains (e.g. inside an operator)
                self.counts.syncs += 1
        elif not func.is_view and func not in NO_KERNEL and not _on_meta(args):
            self.counts.launches += 1
            self.counts.operators[func.name()] += 1
        return func(*args, **(kwargs or {}))


def _on_meta(args) -> bool:
    """Meta tensors carry shapes only: nothing is computed, no kernel launched."""
    return any(isinstance(a, torch.Tensor) and a.is_meta for a in tree_leaves(args))


class _Python(TorchFunctionMode):
    def __init__(self, counts: Counts):
        super().__init__()
        self.counts, self.inside = counts, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            self.counts.syncs += 1
            self.inside += 1
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.inside -= 1
        return func(*args, **(kwargs or {}))


def count(fn: Callable[[], object]) -> tuple[Counts, object]:
    """(counts, result) of one call of fn."""
    counts = Counts()
    python = _Python(counts)
    with python, _Dispatch(counts, python):
        result = fn()
    return counts, result


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import engine as bench  # noqa: PLC0415 (benchmarks/engine.py, a sibling script)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="c", choices=list(bench.CASES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=15, help="operators to list per evaluator")
    args = parser.parse_args(argv)
    sizes = (bench.QUICK if args.quick else bench.FULL)[args.case]
    case = bench.CASES[args.case](**sizes)
    budget = bench.MEMORY_CASES.get(args.case, 2048 * 2**20)
    for name, fn in {
        "engine": lambda: bench.run_engine(case, torch.device("cpu"), budget),
        "loop": lambda: bench.run_loop(case),
    }.items():
        counts, _ = count(fn)
        k = len(case.variants)
        print(f"{name}: {counts.launches / k:.1f} launches and {counts.syncs} host syncs per call of {k} variants")
        for op, n in counts.operators.most_common(args.top):
            print(f"  {n / k:7.2f}  {op}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
