"""Planning: the variants grouped by what they reset, and batch, chunk and slice sizes for the budget."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from layerprobe.data.dataset import Splits
from layerprobe.models.units import State, Unit
from layerprobe.probing.variants import Variant, batch_key

_CACHE_BYTES = 32 * 2**20  # activations per slice: a slice's suffix streams through the cache
_MIN_ROWS = 256  # rows (variants × inputs) per slice below which GEMMs get too thin


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold even one variant on one input."""


@dataclass
class Plan:
    """Two levels of batching. A *batch* of inputs is walked through the chain once; its prefix
    activations are shared by every group. Within it, each chunk of K variants runs in *slices*
    of K × slice inputs (on the CPU about `_CACHE_BYTES` of activations, so the suffix streams
    through the cache; on a GPU as many as fit), while the chunk's reset entries are prepared once
    per batch. Half the budget goes to the batch's prefix activations, half to a chunk: its
    prepared entries and one slice's work. On the CPU the budget is halved first, for what the
    allocator retains."""

    model: nn.Module
    units: list[Unit]
    final: State
    variants: list[Variant]
    splits: Splits
    budget: int
    chain: bool
    device: torch.device
    ops: bool = False
    groups: dict[int, list[list[int]]] = field(default_factory=dict)  # first reset unit → chunks of ids
    batch: int = 0
    slices: dict[tuple[int, ...], int] = field(default_factory=dict)  # chunk → inputs per slice

    def __post_init__(self) -> None:
        by_set = defaultdict(list)
        for i, v in enumerate(self.variants):
            by_set[batch_key(v)].append(i)
        index = {u.name: u.index for u in self.units}
        widest = widest_activation(self.model, self.splits)
        row = 4 * widest  # per input and variant: input, output and temporaries of the widest layer
        unit_bytes = {
            u.name: sum(self.final[k].numel() * self.final[k].element_size() for k in u.keys) for u in self.units
        }
        # On the CPU the allocator keeps freed heap blocks (glibc: per thread arena, and blocks up to
        # its grown mmap threshold), so the resident set exceeds the live tensors: plan for half.
        usable = self.budget // 2 if self.device.type == "cpu" else self.budget
        half = usable // 2
        n_max = max((len(x) for x, _ in self.splits.values()), default=1)
        self.batch = max(1, min(n_max, half // row))
        rows = max(1, half // (2 * row))
        if self.device.type == "cpu":  # a GPU wants big calls; a CPU, slices that stay in its cache
            rows = min(rows, max(_MIN_ROWS, _CACHE_BYTES // widest))
        for key, ids in by_set.items():
            # A variant's prepared entries: its reset units, twice (the entries, and their noise or the
            # copies a stack makes); an α chunk also holds the start and final weights.
            weights = 2 * sum(unit_bytes[u] for u in key[0])
            k = min(len(ids), (half - rows * row - 2 * weights) // weights if weights else len(ids))
            if k < 1 or self.batch * row > half:
                need = 2 * (row + 3 * weights)
                raise MemoryBudgetError(
                    f"engine.memory_budget of {_size(self.budget)} cannot hold one variant on "
                    f"one input (about {_size(need)} needed); raise it"
                )
            first = min(index[u] for u in key[0]) if self.chain and key[0] else 0
            for s in range(0, len(ids), k):
                chunk = ids[s : s + k]
                self.groups.setdefault(first, []).append(chunk)
                self.slices[tuple(chunk)] = max(1, rows // len(chunk))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def widest_activation(model: nn.Module, splits: Splits) -> int:
    """Bytes per input of the widest activation (one forward of one input through every layer)."""
    widest = 1

    def hook(_module, inputs, output):
        nonlocal widest
        for t in (*inputs, output):
            if isinstance(t, torch.Tensor):
                widest = max(widest, t[0].numel() * t.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            for x, _ in splits.values():
                if len(x):
                    model(x[:1].to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return widest
