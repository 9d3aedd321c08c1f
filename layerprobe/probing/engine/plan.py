"""Planning: the variants grouped by what they reset, and batch, chunk and slice sizes for the budget."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from layerprobe.data.dataset import Splits
from layerprobe.models.units import State, Unit
from layerprobe.probing.variants import Variant, batch_key

_CACHE_BYTES = 64 * 2**20  # activations per slice: a slice's suffix streams through the cache
_MIN_ROWS = 256  # rows (variants × inputs) per slice below which GEMMs get too thin


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold even one variant on one input."""


@dataclass
class Plan:
    """Two levels of batching. A *batch* of inputs is walked through the chain once; its prefix
    activations are shared by every group. Within it, each chunk of K variants runs in *slices*
    of K × slice inputs (on the CPU about `_CACHE_BYTES` of activations, so the suffix streams
    through the cache; on a GPU as many as fit), while the chunk's reset entries are prepared once
    per batch. The batch's prefix activations and its block of logits take half the budget at
    most, a chunk what they leave: its prepared entries and one slice's work, sized by the widest
    activation from its first reset unit on. On the CPU the budget is halved first, for what the
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
    ids: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)  # chunk → its ids, on the device

    def __post_init__(self) -> None:
        by_set = defaultdict(list)
        for i, v in enumerate(self.variants):
            by_set[batch_key(v)].append(i)
        index = {u.name: u.index for u in self.units}
        widths, logits = activation_widths(self.model, self.units, self.splits)
        widest = max(widths)
        # Per input: the prefix's input, output and temporaries of the widest layer, and the batch's
        # block of logits (float64, its log-softmax and the model's float32 output) of every variant.
        row = 4 * widest + 20 * logits * len(self.variants)
        unit_bytes = {
            u.name: sum(self.final[k].numel() * self.final[k].element_size() for k in u.keys) for u in self.units
        }
        # On the CPU the allocator keeps freed heap blocks (glibc: per thread arena, and blocks up to
        # its grown mmap threshold), so the resident set exceeds the live tensors: plan for half.
        usable = self.budget // 2 if self.device.type == "cpu" else self.budget
        half = usable // 2
        n_max = max((len(x) for x, _ in self.splits.values()), default=1)
        self.batch = max(1, min(n_max, half // row))
        if self.batch * row > half:
            raise MemoryBudgetError(
                f"engine.memory_budget of {_size(self.budget)} cannot hold one variant on "
                f"one input (about {_size(2 * row)} needed); raise it"
            )
        chunk_budget = usable - self.batch * row  # what the batch's prefix leaves, at least half
        for key, ids in by_set.items():
            first = min(index[u] for u in key[0]) if self.chain and key[0] else 0
            # A slice's activations are those of the first reset unit and the units after it.
            wide = max(widths[first:]) if self.chain else widest
            slice_row = 4 * wide  # per input and variant: input, output and temporaries of its widest layer
            rows = max(1, chunk_budget // (2 * slice_row))
            if self.device.type == "cpu":  # a GPU wants big calls; a CPU, slices that stay in its cache
                rows = min(rows, max(_MIN_ROWS, _CACHE_BYTES // wide))
            # A variant's prepared entries: its reset units, twice (the entries, and their noise or the
            # copies a stack makes); an α chunk also holds the start and final weights.
            weights = 2 * sum(unit_bytes[u] for u in key[0])
            k = min(len(ids), (chunk_budget - rows * slice_row - 2 * weights) // weights if weights else len(ids))
            if k < 1:
                need = 2 * (slice_row + 3 * weights)
                raise MemoryBudgetError(
                    f"engine.memory_budget of {_size(self.budget)} cannot hold one variant on "
                    f"one input (about {_size(need)} needed); raise it"
                )
            for s in range(0, len(ids), k):
                chunk = ids[s : s + k]
                self.groups.setdefault(first, []).append(chunk)
                self.slices[tuple(chunk)] = max(1, rows // len(chunk))
                self.ids[tuple(chunk)] = torch.tensor(chunk, dtype=torch.int64, device=self.device)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def activation_widths(model: nn.Module, units: list[Unit], splits: Splits) -> tuple[list[int], int]:
    """Per unit, the bytes per input of its widest activation (a layer's input or output; one
    forward of one input), and the model's output elements per input. The forward runs on meta
    tensors: shapes without arithmetic or kernels (the engine's vmap needs a forward that reads no
    values anyway)."""
    widths, out = [1] * len(units), 1
    owner = {}
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            owner[module] = next((u.index for u in units if name == u.name or name.startswith(u.name + ".")), None)

    def hook(module, inputs, output):
        width = max(
            (t[0].numel() * t.element_size() for t in (*inputs, output) if isinstance(t, torch.Tensor)), default=1
        )
        i = owner[module]
        for j in [i] if i is not None else range(len(units)):  # a layer outside every unit: all see it
            widths[j] = max(widths[j], width)

    meta = {n: torch.empty_like(t, device="meta") for n, t in (*model.named_parameters(), *model.named_buffers())}
    handles = [m.register_forward_hook(hook) for m in owner]
    try:
        with torch.no_grad():
            for x, _ in splits.values():
                if len(x):
                    out = max(out, functional_call(model, meta, (x[:1].to("meta"),))[0].numel())
    finally:
        for h in handles:
            h.remove()
    return widths, out
