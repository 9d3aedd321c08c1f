"""The engine: the one place that evaluates variants, many at once, with the reference's results.

For a chain of units (models.UnitChain) the variants are grouped by the set of units they reset;
a group whose first reset unit is d shares the prefix (units before d), so that is computed once
per batch of inputs and reused by every group starting at d. A chunk of K variants of a group
then runs its reset unit in one call: a batched GEMM or one dense conv over their weights, or
torch.func.vmap over their stacked entries. The K variants are folded into the batch dimension
for every later unit whose weights they share, so each such unit is one large GEMM/conv instead
of K small ones. Linear and conv layers are linear in their weights, so an α grid
(interpolation, criticality) costs two evaluations of the reset layer, not one per α:
    W(α)·a + b(α) = z_start + α·(z_final − z_start).
A conv's K outputs stay side by side (K·C channels) through the batch norm, ReLU and pooling after
it, one call each. A batch's logits go into one block, reduced to correct / loss / agreement counts
and the discordant count against the final model in one pass and dropped; the counts stay on the
device until the end (tally.py). `Plan` sizes the batches, chunks and slices so the working set
stays within `memory_budget` bytes; a chunk holds the prepared entries of its reset units only,
so K copies of a whole model arise only for whole-model variants, and then only as many as the
budget allows.

With `ops` (the compiled operators of csrc/, layerprobe.probing.ops), three steps of the chain path run
fused: the head (a shared last Linear: logits reduced tile by tile to the counts, never all K·B·C
at once), an α grid's first Linear layer (two products, mixing and ReLU in one pass) and the
criticality noise of that layer (drawn inside the kernel from the variants' seeds, never stored for
all K). Everything else, and every model that is not a chain, stays on the PyTorch path; the rows
are the same either way (losses to float rounding).

Any other model goes through the general path: vmap of functional_call over the K variants'
stacked reset entries, shared entries passed once — correct for any architecture, without prefix
sharing.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from layerprobe.base.device import resolve_device
from layerprobe.data.dataset import Splits
from layerprobe.models.chain import UnitChain
from layerprobe.models.units import State, Unit
from layerprobe.probing import ops as lp_ops
from layerprobe.probing.engine.chain import chain_batch
from layerprobe.probing.engine.general import general_batch
from layerprobe.probing.engine.plan import MemoryBudgetError, Plan
from layerprobe.probing.engine.tally import Tallies
from layerprobe.probing.variants import BN_STATS, Variant, row

__all__ = ["MemoryBudgetError", "evaluate"]


def evaluate(
    model: nn.Module,
    units: list[Unit],
    variants: list[Variant],
    final: State,
    source: Callable[[tuple[str, int]], State],
    splits: Splits,
    bn_stats: str,
    device: str | torch.device = "cpu",
    memory_budget: int = 2 * 2**30,
    progress: str | None = None,
    ops: bool = False,
    noise: dict | None = None,
) -> list[dict]:
    """Rows identical in order and content to reference.evaluate (losses to float rounding).

    `progress` labels a progress bar (shown on a terminal only); `memory_budget` is in bytes; `ops`
    uses the loaded fused operators (see layerprobe.probing.ops.resolve for turning engine.ops into it).
    `noise` keeps the criticality noise drawn (on the CPU) for calls that reuse its seeds (the σ search's
    rounds): pass one dict to each; None draws it afresh in every call.
    """
    device = resolve_device(device)
    _check(units, variants, bn_stats)
    if ops and not lp_ops.has_device(device):
        raise lp_ops.OpsUnavailable(
            f"ops=True but the fused operators are not loaded for {device.type} "
            "(layerprobe.probing.ops.load / resolve first)"
        )
    if not variants:
        return []
    sources = _load_sources(variants, source)
    model = _architecture(model, device)
    on_device = lambda state: {k: v.to(device) for k, v in state.items()}  # noqa: E731
    final = on_device(final)
    sources = {key: on_device(state) for key, state in sources.items()}
    chain = isinstance(model, UnitChain) and [u.name for u in units] == list(model.unit_names)
    plan = Plan(model, units, final, variants, splits, memory_budget, chain, device, ops)

    tallies = Tallies(len(variants), splits, device)
    batches = [(split, start) for split, (x, _) in splits.items() for start in range(0, len(x), plan.batch)]
    walk = chain_batch if chain else general_batch
    with torch.no_grad(), _full_precision():
        for split, start in tqdm(batches, desc=progress, unit="batch", disable=None if progress else True):
            x, y = splits[split]
            xb, yb = x[start : start + plan.batch].to(device), y[start : start + plan.batch].to(device)
            walk(model, units, final, sources, variants, plan, xb, yb, split, tallies, bn_stats, noise)
    results = tallies.results()
    return [row(v, bn_stats, s, results[i, s]) for i, v in enumerate(variants) for s in splits]


@contextlib.contextmanager
def _full_precision():
    """No TF32 on CUDA (cuDNN uses it for convs by default): probes measure the float32 model."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _architecture(model: nn.Module, device: torch.device) -> nn.Module:
    """The model to run, in eval mode, with its weights as meta tensors: every call passes the
    entries of the states it evaluates, so copying the weights would only cost time and memory.
    Buffers no state dict holds (non-persistent ones) are copied to the device."""
    persistent = model.state_dict(keep_vars=True)
    memo = {id(t): nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False) for t in model.parameters()}
    memo.update({id(t): torch.empty_like(t, device="meta") for t in persistent.values() if id(t) not in memo})
    arch = copy.deepcopy(model, memo).eval()
    for name, buffer in arch.named_buffers():
        if not buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            setattr(arch.get_submodule(owner), leaf, buffer.to(device))
    return arch


def _check(units: list[Unit], variants: list[Variant], bn_stats: str) -> None:
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    names = {u.name for u in units}
    for v in variants:
        unknown = [u for u in v.units if u not in names]
        if unknown:
            raise ValueError(
                f"{v.probe} variant {v.label!r} resets unknown unit(s) {unknown}; "
                f"units: {', '.join(u.name for u in units)}"
            )
        if v.alpha is not None and not 0.0 <= v.alpha <= 1.0:
            raise ValueError(f"{v.probe} variant {v.label!r}: α = {v.alpha} lies outside [0, 1]")


def _load_sources(variants: list[Variant], source: Callable) -> dict[tuple[str, int], State]:
    loaded = {}
    for v in variants:
        if v.source not in loaded:
            try:
                loaded[v.source] = source(v.source)
            except (KeyError, IndexError):
                kind, index = v.source
                raise ValueError(f"{v.probe} variant {v.label!r} needs {kind} {index}, which does not exist") from None
    return loaded
