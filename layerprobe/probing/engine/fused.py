"""The fused operators' calls on the chain path: an α chunk's first Linear layer, its noise, the head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from layerprobe.models.units import State, Unit
from layerprobe.probing import ops as lp_ops
from layerprobe.probing.engine.stacking import linear_split, local
from layerprobe.probing.variants import Variant


def fused_interpolation(
    unit: Unit, name: str, source: State, state: dict, chunk: list[Variant], noise: list[dict] | None, rest: list
) -> tuple[Callable, list]:
    """The first Linear layer of an α chunk through the fused operators: act(z₀ + α(z_T − z₀)) in
    one interp_unit call, plus for criticality σ·(a E_kᵀ) from noisy_unit (weight 0, the variants'
    seeds) and σ·e_k for the bias. Returns the layer's function and the children still to run."""
    start, trained = local(source, f"{unit.name}.{name}"), local(state, name)
    weight = trained["weight"]
    alphas = torch.tensor([v.alpha for v in chunk], dtype=weight.dtype, device=weight.device)
    relu = noise is None and bool(rest) and type(rest[0][1]) is nn.ReLU  # noise goes in before the ReLU
    activation, rest = ("relu", rest[1:]) if relu else ("none", rest)
    if noise is not None:
        sigmas = torch.tensor([v.sigma for v in chunk], dtype=weight.dtype, device=weight.device)
        seeds = torch.tensor([v.seed for v in chunk], dtype=torch.int64)
        stream = unit.params.index(f"{unit.name}.{name}.weight")  # as in compose.noise
        zero = torch.zeros_like(weight)
        bias_key = f"{unit.name}.{name}.bias"
        bias_noise = (
            sigmas.view(-1, 1, 1) * torch.stack([e[bias_key] for e in noise]).to(weight.device).unsqueeze(1)
            if bias_key in noise[0]
            else None
        )

    def run_layer(a: torch.Tensor) -> torch.Tensor:
        flat = a.reshape(-1, a.shape[-1])
        z = lp_ops.interp_unit(
            flat, start["weight"], start.get("bias"), weight, trained.get("bias"), alphas, activation
        )
        if noise is not None:
            z.add_(lp_ops.noisy_unit(flat, zero, None, sigmas, seeds, stream))
            if bias_noise is not None:
                z.add_(bias_noise)
        return z.view(len(chunk), *a.shape[:-1], -1)

    return run_layer, rest


def fused_weight(unit: Unit, module: nn.Module) -> tuple[str, ...]:
    """The weight whose noise the fused noisy_unit draws itself: a unit's first layer, if exactly a
    Linear (the condition under which first_unit runs it fused)."""
    layers = linear_split(module)
    return (f"{unit.name}.{layers[1][0]}.weight",) if layers and type(layers[1][1]) is nn.Linear else ()


def fused_head(module: nn.Module, state: dict):
    """(pre, weight, bias) when the unit is parameter-free layers then a Linear (the fused head's
    shape); else None."""
    if not isinstance(module, nn.Sequential) or not len(module):
        return None
    *before, (name, layer) = module.named_children()
    if type(layer) is not nn.Linear or any(
        any(True for _ in c.parameters()) or any(True for _ in c.buffers()) for _, c in before
    ):
        return None
    own = local(state, name)
    return nn.Sequential(*[c for _, c in before]), own["weight"], own.get("bias")
