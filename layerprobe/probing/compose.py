"""What a variant's state is: the final state with its reset entries taken from the source, and noise.

The final and source states are read, never written: probing never puts the trained weights at risk.
"""

from __future__ import annotations

import torch

from layerprobe.models.units import State, Unit
from layerprobe.probing.noise import normal_noise
from layerprobe.probing.variants import BN_STATS, Variant


def noise(variant: Variant, units: list[Unit], final: State, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The standard normal noise E of a noisy variant, per parameter of its reset units (less `skip`).

    Layerprobe's one noise definition, noise.normal_noise (Philox4x32-10, csrc/philox.h): parameter p
    of a unit (its index in the unit's parameters is the stream), flattened to 2-D (shape[0], rest),
    gets entry (row, col) keyed by (variant seed, p, row, col). The engine's fused operators draw
    the same numbers inside their kernels, on the CPU or a GPU, so every path perturbs alike.
    """
    out = {}
    for u in units:
        if u.name in variant.units:
            for stream, key in enumerate(u.params):
                if key in skip:
                    continue
                shape = final[key].shape
                rows = shape[0] if len(shape) else 1
                out[key] = normal_noise(
                    variant.seed, stream, rows, final[key].numel() // max(rows, 1), final[key].dtype
                ).view(shape)
    return out


def chunk_noise(
    chunk: list[Variant], units: list[Unit], final: State, skip: tuple[str, ...] = (), drawn: dict | None = None
) -> list[dict[str, torch.Tensor]]:
    """`noise` of each of a chunk's variants, drawn once per seed: variants of one seed (a criticality unit,
    α and sample at several σ) share E, which σ only scales. `drawn` keeps the draws for later calls."""
    drawn = {} if drawn is None else drawn
    for v in chunk:
        if (v.seed, v.units, skip) not in drawn:
            drawn[(v.seed, v.units, skip)] = noise(v, units, final, skip)
    return [drawn[(v.seed, v.units, skip)] for v in chunk]


def entry(variant: Variant, key: str, final: State, source: State) -> torch.Tensor:
    """One reset entry before noise: the source's, or interpolated from it towards the final."""
    start = source[key]
    if variant.alpha is None or not start.is_floating_point():
        return start if variant.alpha is None else final[key]
    return (1.0 - variant.alpha) * start + variant.alpha * final[key]


def reset_keys(unit: Unit, whole: bool, bn_stats: str) -> tuple[str, ...]:
    """The state entries of `unit` a variant resets: its parameters, and its buffers unless kept."""
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
    return unit.params + (unit.buffers if whole or bn_stats == "same_source" else ())


def compose(variant: Variant, units: list[Unit], final: State, source: State, bn_stats: str) -> dict[str, torch.Tensor]:
    """The variant's full state dict; `final` and `source` are read, never written.

    bn_stats "same_source" resets a unit's buffers (running statistics) like its parameters;
    "trained" keeps the final model's. A fullmodel variant resets every entry of the model.
    """
    state = dict(final)
    keys = set(source) - {k for u in units for k in u.params + u.buffers} if variant.whole else set()
    for key in keys:  # entries outside every unit: only a whole-model variant touches them
        state[key] = entry(variant, key, final, source)
    for unit in units:
        if unit.name in variant.units:
            for key in reset_keys(unit, variant.whole, bn_stats):
                state[key] = entry(variant, key, final, source)
    if variant.noisy:
        for key, e in noise(variant, units, final).items():
            state[key] = state[key] + variant.sigma * e
    return state
