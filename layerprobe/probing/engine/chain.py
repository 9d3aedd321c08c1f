"""The chain path: one walk of the units per batch, prefixes shared, reset units batched, the suffix folded."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from layerprobe.models.chain import UnitChain
from layerprobe.models.units import State, Unit
from layerprobe.probing import compose
from layerprobe.probing import ops as lp_ops
from layerprobe.probing.engine.fused import fused_head, fused_interpolation, fused_weight
from layerprobe.probing.engine.plan import Plan
from layerprobe.probing.engine.stacking import (
    CHANNELWISE,
    batched_layer,
    in_place,
    joined_norm,
    linear_split,
    local,
    run_stacked,
    side_by_side,
    stack_entries,
)
from layerprobe.probing.engine.tally import Logits, Tallies
from layerprobe.probing.variants import Variant


def chain_batch(
    model: UnitChain,
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
    unit_state = {u.name: local(final, u.name) for u in units}
    modules = {u.name: model.unit(u.name) for u in units}

    def shared(u: Unit, h: torch.Tensor) -> torch.Tensor:
        return functional_call(modules[u.name], unit_state[u.name], (h,))

    def folded_call(u: Unit, z: torch.Tensor) -> torch.Tensor:
        """A shared unit on the folded rows, which are the walk's own: its ReLUs may work in place."""
        module = modules[u.name]
        if not isinstance(module, nn.Sequential):
            return shared(u, z)
        for name, child in module.named_children():
            z = torch.relu_(z) if in_place(child, z) else functional_call(child, local(unit_state[u.name], name), (z,))
        return z

    last = units[-1]
    # The fused head takes one label per input; labels per position (tokens) take the PyTorch path.
    head = fused_head(modules[last.name], unit_state[last.name]) if plan.ops and y.dim() == 1 else None
    # The fused head counts a chunk itself unless the chunk resets the last unit too.
    fused = {
        tuple(c): head is not None and first != last.index and last.name not in variants[c[0]].units
        for first, chunks in plan.groups.items()
        for c in chunks
    }
    put = [c for first in sorted(plan.groups) for c in plan.groups[first] if not fused[tuple(c)]]
    block = Logits(put, plan.ids, len(x))
    reference = None  # the final model's predictions, needed up front by the fused head
    h = x
    for u in units:
        for chunk_ids in plan.groups.get(u.index, []):
            chunk = [variants[i] for i in chunk_ids]
            skip = fused_weight(u, modules[u.name]) if plan.ops and chunk[0].alpha is not None else ()
            noise = compose.chunk_noise(chunk, units, final, skip, drawn) if chunk[0].noisy else None
            first = first_unit(u, modules[u.name], unit_state[u.name], chunk, final, sources, bn_stats, noise, plan.ops)
            later = [
                (
                    after,
                    stack_entries(after, chunk, final, sources, bn_stats, noise)
                    if after.name in chunk[0].units
                    else None,
                )
                for after in units[u.index + 1 :]
            ]
            head_fused = fused[tuple(chunk_ids)]
            if head_fused and reference is None:  # one forward of the final model per batch
                reference = functional_call(model, dict(final), (x,)).argmax(dim=-1)
            step = plan.slices[tuple(chunk_ids)]
            for s in range(0, len(h), step):
                z, folded = first(h[s : s + step]), False
                k, b = z.shape[:2]
                for after, stacked in later:
                    if head_fused and after is last:  # logits reduced tile by tile inside the operator
                        pre, weight, bias = head
                        hidden = pre(z if folded else z.flatten(0, 1))
                        counts = lp_ops.head_eval(
                            hidden.reshape(k, b, -1), weight, bias, y[s : s + step], reference[s : s + step]
                        )
                        tallies.add(split, plan.ids[tuple(chunk_ids)], *counts)
                        z = None
                        break
                    if stacked is not None:  # reset in this chunk too: per-variant entries
                        z = z.unflatten(0, (k, b)) if folded else z
                        z, folded = (
                            run_stacked(
                                modules[after.name], unit_state[after.name], local(stacked, after.name), z, True
                            ),
                            False,
                        )
                    else:  # shared weights: the K variants folded into the batch, one call
                        z, folded = folded_call(after, z if folded else z.flatten(0, 1)), True
                if z is not None:
                    block.put(chunk_ids, s, z.unflatten(0, (k, b)) if folded else z)
        h = shared(u, h)
    # The walk ends with the final model's logits: agreement is counted without a forward of its own.
    block.reduce(y, h.argmax(dim=-1), split, tallies)


def first_unit(
    unit: Unit,
    module: nn.Module,
    state: dict,
    chunk: list[Variant],
    final: State,
    sources: dict,
    bn_stats: str,
    noise: list[dict] | None,
    ops: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function giving the chunk's K outputs (K, B, ...) of its first reset unit on a shared input.

    Its entries are prepared once. When the unit opens with a linear or conv layer, that layer runs
    once for all K variants: a batched GEMM on the shared input (Linear) or one dense conv with
    their weights concatenated along the output channels; an α grid needs only its start and
    final weights, mixed afterwards as z_start + α·(z_final − z_start). With `ops`, an α grid's
    Linear layer is the fused interp_unit (and a following ReLU runs inside it when there is no
    noise), and its weight noise comes from noisy_unit, drawn in the kernel.
    """
    layers = linear_split(module)
    if layers is None:
        stacked = local(stack_entries(unit, chunk, final, sources, bn_stats, noise), unit.name)
        return lambda h: run_stacked(module, state, stacked, h, False)
    pre, (name, layer), rest = layers

    def stacked_of(child: str, module: nn.Module) -> dict[str, torch.Tensor]:
        """The chunk's reset entries of one child layer, stacked, by the names the child knows."""
        prefix = f"{unit.name}.{child}"
        keys = tuple(f"{prefix}.{k}" for k, _ in [*module.named_parameters(), *module.named_buffers()])
        return local(stack_entries(unit, chunk, final, sources, bn_stats, noise, keys), prefix)

    # A conv's K outputs stay side by side, (B, K·C, ...), through the channel-wise layers after it
    # (batch norm with the K sets of statistics joined, ReLU, pooling): one call each for all K.
    k = len(chunk)
    conv = type(layer) is not nn.Linear
    if chunk[0].alpha is None:
        run_layer = (side_by_side if conv else batched_layer)(layer, stacked_of(name, layer))
    elif ops and not conv:
        run_layer, rest = fused_interpolation(unit, name, sources[chunk[0].source], state, chunk, noise, rest)
    else:
        run_layer = interpolated(layer, unit, name, sources[chunk[0].source], state, chunk, noise, conv)
    joined = []
    while conv and rest:
        child_name, child = rest[0]
        entries = (
            {}
            if type(child) in CHANNELWISE
            else joined_norm(child, local(state, child_name), stacked_of(child_name, child), k)
        )
        if entries is None:
            break
        joined.append((child, entries))
        rest = rest[1:]
    rest_entries = [(child, local(state, child_name), stacked_of(child_name, child)) for child_name, child in rest]

    def run(h: torch.Tensor) -> torch.Tensor:
        z = run_layer(pre(h))
        if conv:
            for child, entries in joined:
                z = torch.relu_(z) if type(child) is nn.ReLU else functional_call(child, entries, (z,))
            z = z.unflatten(1, (k, -1)).movedim(1, 0)
        b = z.shape[1]
        for child, own, stacked in rest_entries:
            if stacked:
                z = run_stacked(child, own, stacked, z, True)
            else:
                z = z.flatten(0, 1)
                z = torch.relu_(z) if in_place(child, z) else functional_call(child, own, (z,))
                z = z.unflatten(0, (k, b))
        return z

    return run


def interpolated(
    layer: nn.Module,
    unit: Unit,
    name: str,
    source: State,
    state: dict,
    chunk: list[Variant],
    noise: list[dict] | None,
    conv: bool,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """An α chunk's first layer (one source for the chunk: the plan groups interpolations by it):
    the start and final weights' outputs, mixed as z_start + α·(z_final − z_start), plus for
    criticality σ times the noise's output. A Linear gives (K, B, out); a conv, (B, K·C, ...)."""
    start, trained = local(source, f"{unit.name}.{name}"), local(state, name)
    run = side_by_side if conv else batched_layer
    ends = run(layer, {k: torch.stack([start[k], trained[k]]) for k in trained})
    device, dtype = trained["weight"].device, trained["weight"].dtype
    alphas = torch.tensor([v.alpha for v in chunk], dtype=dtype, device=device)
    sigmas = torch.tensor([v.sigma or 0.0 for v in chunk], dtype=dtype, device=device)
    perturb = (
        run(layer, {k: torch.stack([e[f"{unit.name}.{name}.{k}"] for e in noise]).to(device) for k in trained})
        if noise is not None
        else None
    )
    if not conv:

        def mix(a: torch.Tensor) -> torch.Tensor:  # (2, B, out) → (K, B, out)
            z = ends(a)
            shape = (-1, *[1] * (z.dim() - 1))
            z = torch.addcmul(z[:1], alphas.view(shape), z[1:] - z[:1])
            return z if perturb is None else z.add_(sigmas.view(shape) * perturb(a))

        return mix
    sigmas = sigmas.repeat_interleave(trained["weight"].shape[0])  # one σ per channel of K·C

    def mix_channels(a: torch.Tensor) -> torch.Tensor:  # (B, 2·C, ...) → (B, K·C, ...)
        z = ends(a).unflatten(1, (2, -1))
        shape = (1, -1, *[1] * (z.dim() - 2))
        z = torch.addcmul(z[:, :1], alphas.view(shape), z[:, 1:] - z[:, :1]).flatten(1, 2)
        return z if perturb is None else z.add_(sigmas.view(shape[:-1]) * perturb(a))

    return mix_channels
