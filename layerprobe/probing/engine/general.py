"""The general path: any model, vmap of functional_call over the K variants' stacked reset entries."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from layerprobe.models.units import State, Unit
from layerprobe.probing import compose
from layerprobe.probing.engine.plan import Plan
from layerprobe.probing.engine.stacking import run_stacked, stack_entries
from layerprobe.probing.engine.tally import Logits, Tallies
from layerprobe.probing.variants import Variant


def general_batch(
    model: nn.Module,
    units: list[Unit],
    final: State,
    sources: dict,
    variants: list[Variant],
    plan: Plan,
    x: torch.Tensor,
    y: torch.Tensor,
    split: str,
    tallies: Tallies,
    bn_stats: str,
    drawn: dict | None = None,
) -> None:
    reference = functional_call(model, dict(final), (x,)).argmax(dim=-1)
    block = Logits([c for chunks in plan.groups.values() for c in chunks], plan.ids, len(x))
    outside = set(final) - {k for u in units for k in u.keys}
    for chunks in plan.groups.values():
        for chunk_ids in chunks:
            chunk = [variants[i] for i in chunk_ids]
            noise = compose.chunk_noise(chunk, units, final, drawn=drawn) if chunk[0].noisy else None
            stacked = {}
            for u in units:
                if u.name in chunk[0].units:
                    stacked.update(stack_entries(u, chunk, final, sources, bn_stats, noise))
            if chunk[0].whole:  # entries outside every unit come from the source too
                stacked.update(
                    {k: torch.stack([compose.entry(v, k, final, sources[v.source]) for v in chunk]) for k in outside}
                )
            shared = {k: v for k, v in final.items() if k not in stacked}
            step = plan.slices[tuple(chunk_ids)]
            for s in range(0, len(x), step):
                block.put(chunk_ids, s, run_stacked(model, shared, stacked, x[s : s + step], False))
    block.reduce(y, reference, split, tallies)
