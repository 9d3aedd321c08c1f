"""Entries of the variants, stacked per unit (only where a unit is reset), and layers run under them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from layerprobe.models.units import State, Unit
from layerprobe.probing import compose
from layerprobe.probing.variants import Variant

FOLDABLE_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # outputs linear in (weight, bias)


def stack_entries(
    unit: Unit,
    chunk: list[Variant],
    final: State,
    sources: dict,
    bn_stats: str,
    noise: list[dict] | None,
    keys: tuple[str, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """The unit's reset entries of each variant of the chunk, stacked along a new first dim."""
    reset = compose.reset_keys(unit, chunk[0].whole, bn_stats)
    out = {}
    for key in keys if keys is not None else reset:
        if key not in reset:
            continue
        values = [compose.entry(v, key, final, sources[v.source]) for v in chunk]
        if noise is not None and key in noise[0]:
            values = [val + v.sigma * e[key].to(val.device) for val, v, e in zip(values, chunk, noise)]
        out[key] = torch.stack(values)
    return out


def local(entries: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under `prefix.` with the prefix removed (the names a submodule knows them by)."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in entries.items() if k.startswith(prefix + ".")}


def run_stacked(module: nn.Module, shared: dict, stacked: dict, h: torch.Tensor, batched_input: bool) -> torch.Tensor:
    """module with K sets of `stacked` entries on h (K, B, ...) or on a shared h (B, ...)."""

    def call(entries, x):
        return functional_call(module, {**shared, **entries}, (x,))

    return vmap(call, in_dims=(0, 0 if batched_input else None))(stacked, h)


def batched_layer(layer: nn.Module, stacked: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The layer under M stacked sets of entries (M, ...) on one shared input, as one call: a → (M, B, ...)."""
    m = next(iter(stacked.values())).shape[0]
    if isinstance(layer, nn.Linear):  # a batched GEMM writes (M, B, out) directly, with the bias fused
        weight_t = stacked["weight"].transpose(1, 2)  # a view: BLAS reads it transposed
        bias = stacked["bias"].unsqueeze(1) if "bias" in stacked else None

        def linear(a: torch.Tensor) -> torch.Tensor:
            flat = a.reshape(-1, a.shape[-1]).expand(m, -1, -1)
            out = torch.baddbmm(bias, flat, weight_t) if bias is not None else torch.bmm(flat, weight_t)
            return out.view(m, *a.shape[:-1], -1)

        return linear
    joined = side_by_side(layer, stacked)
    return lambda a: joined(a).unflatten(1, (m, -1)).movedim(1, 0)


def side_by_side(layer: nn.Module, stacked: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A conv under M stacked sets of entries on one shared input as one dense conv, the M sets'
    output channels side by side: a (B, C_in, ...) → (B, M·C, ...)."""
    joined = {key: value.flatten(0, 1) for key, value in stacked.items()}
    return lambda a: functional_call(layer, joined, (a,))


# Layers that work on each channel alone, whatever the number of channels: on the side-by-side
# outputs of a conv they serve all M sets in one call (exact types: a subclass may differ).
CHANNELWISE = (
    nn.ReLU,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def joined_norm(norm: nn.Module, shared: dict, stacked: dict, m: int) -> dict[str, torch.Tensor] | None:
    """A batch norm's entries for M sets of channels side by side (stacked ones joined, shared ones
    repeated M times), or None where it does not normalize each channel by its running statistics."""
    if type(norm) not in BATCH_NORMS or not norm.track_running_stats or "running_mean" not in shared:
        return None
    joined = {}
    for key, value in shared.items():
        if key in stacked:
            joined[key] = stacked[key].flatten(0, 1) if value.dim() else value
        else:
            joined[key] = value.repeat(m) if value.dim() else value
    return joined


def in_place(child: nn.Module, z: torch.Tensor) -> bool:
    """A ReLU may overwrite z when z is a tensor the walk made (not a view of a shared input)."""
    return type(child) is nn.ReLU and z._base is None


def linear_split(module: nn.Module):
    """(pre, (name, layer), rest) when the unit is a Sequential whose first layer with parameters is
    linear in its weights (exactly one of FOLDABLE_LINEAR: a subclass may have its own forward,
    which only functional_call honours) and preceded only by parameter-free layers; else None."""
    if not isinstance(module, nn.Sequential):
        return None
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            if type(child) not in FOLDABLE_LINEAR or getattr(child, "groups", 1) != 1:
                return None  # grouped convs would mix the concatenated variants' channels
            pre = nn.Sequential(*[c for _, c in children[:i]])
            return pre, (name, child), children[i + 1 :]
    return None
