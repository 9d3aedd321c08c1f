"""Probes describe variants of the final model; they evaluate nothing (that is the evaluator's job).

A variant resets some units of the final state θ^T. Each reset entry starts from a source state —
a training checkpoint θ^τ or a fresh draw from the model's own initializers — and may then be
interpolated towards the final value and perturbed by Gaussian noise:

    θ_d = source_d                              (α is None: reinit, rerandomize, joint)
    θ_d = (1 − α)·source_d + α·θ_d^T  [+ σ·E]   (interpolate; criticality adds noise E ~ N(0, I))

The reserved unit label "fullmodel" resets every unit, and takes the buffers from the source too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from layerprobe.ops import normal_noise
from layerprobe.units import FULLMODEL, Unit

BN_STATS = ("same_source", "trained")
State = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Variant:
    probe: str                  # "reinit" | "rerandomize" | "interpolate" | "criticality" | "joint"
    label: str                  # the table's `unit` column: a unit name, "fullmodel" or a set's label
    units: tuple[str, ...]      # units whose entries are reset
    source: tuple[str, int]     # ("checkpoint", τ) or ("draw", k): where reset entries start
    seed: int | None = None     # the draw's or the noise's seed (`draw_seed` column)
    alpha: float | None = None  # None: the source itself; else (1 − α)·source + α·final
    sigma: float | None = None  # std of the Gaussian noise added to the reset parameters
    sample: int | None = None   # noise sample index (`draw` column of criticality rows)
    members: str | None = None  # joint sets: the unit names, space-separated

    @property
    def whole(self) -> bool:
        return self.label == FULLMODEL

    @property
    def noisy(self) -> bool:
        return bool(self.sigma)

    def columns(self) -> dict:
        """The table columns that identify this variant."""
        kind, index = self.source
        return {"probe": self.probe, "unit": self.label, "members": self.members,
                "checkpoint": index if kind == "checkpoint" else None, "alpha": self.alpha,
                "sigma": self.sigma, "draw": index if kind == "draw" else self.sample, "draw_seed": self.seed}


def reinit(units: list[Unit], epochs: list[int]) -> list[Variant]:
    """Each unit, then the whole model, reset to every checkpoint τ."""
    return [Variant("reinit", label, members, ("checkpoint", tau))
            for label, members in _targets(units) for tau in epochs]


def rerandomize(units: list[Unit], draw_seeds: list[int]) -> list[Variant]:
    """Each unit, then the whole model, replaced by draw k of the initializers (seed draw_seeds[k])."""
    return [Variant("rerandomize", label, members, ("draw", k), seed)
            for label, members in _targets(units) for k, seed in enumerate(draw_seeds)]


def interpolate(units: list[Unit], alphas: Sequence[float], start: int = 0) -> list[Variant]:
    """Each unit, then the whole model, at (1 − α)·θ^start + α·θ^T for every α of the grid."""
    _check_alphas(alphas)
    return [Variant("interpolate", label, members, ("checkpoint", start), alpha=float(a))
            for label, members in _targets(units) for a in alphas]


def criticality(units: list[Unit], alphas: Sequence[float], sigmas: Sequence[float],
                noise_seeds: Mapping[tuple[str, int, int, int], int], start: int = 0) -> list[Variant]:
    """Module criticality (Chatterji et al.): each unit at θ^α plus noise σ·E, for every α × σ ×
    sample; `noise_seeds[(unit, i_α, i_σ, sample)]` seeds each noise draw. One more variant, the
    unperturbed model (fullmodel at α = 1, σ = 0), gives the loss the tolerance is relative to."""
    _check_alphas(alphas)
    if any(not s > 0 for s in sigmas):
        raise ValueError(f"criticality: every σ must be > 0 (σ = 0 is the plain interpolation), got {list(sigmas)}")
    names = tuple(u.name for u in units)
    variants = [Variant("criticality", FULLMODEL, names, ("checkpoint", start), alpha=1.0, sigma=0.0)]
    samples = sorted({key[3] for key in noise_seeds})
    for unit in units:
        for i, a in enumerate(alphas):
            for j, s in enumerate(sigmas):
                variants += [Variant("criticality", unit.name, (unit.name,), ("checkpoint", start),
                                     noise_seeds[(unit.name, i, j, k)], float(a), float(s), k) for k in samples]
    return variants


def joint(sets: Sequence[tuple[str, Sequence[str]]], epochs: list[int], draw_seeds: list[int]) -> list[Variant]:
    """Each (label, units) set reset together to every checkpoint, then re-randomized by every draw."""
    variants = []
    for label, members in sets:
        members, text = tuple(members), " ".join(members)
        variants += [Variant("joint", label, members, ("checkpoint", tau), members=text) for tau in epochs]
        variants += [Variant("joint", label, members, ("draw", k), seed, members=text)
                     for k, seed in enumerate(draw_seeds)]
    return variants


def cumulative_sets(units: list[Unit]) -> list[tuple[str, tuple[str, ...]]]:
    """Bottom-up sets (units 1..k, "up to <unit k>") then top-down sets (units k..D, "from <unit k>")."""
    names = [u.name for u in units]
    return ([(f"up to {n}", tuple(names[:k + 1])) for k, n in enumerate(names)]
            + [(f"from {n}", tuple(names[k:])) for k, n in reversed(list(enumerate(names)))])


def _targets(units: list[Unit]) -> list[tuple[str, tuple[str, ...]]]:
    return [(u.name, (u.name,)) for u in units] + [(FULLMODEL, tuple(u.name for u in units))]


def _check_alphas(alphas: Sequence[float]) -> None:
    outside = [a for a in alphas if not 0.0 <= a <= 1.0]
    if outside or not alphas:
        raise ValueError(f"α must lie in [0, 1] (a non-empty grid), got {list(alphas)}")


def noise(variant: Variant, units: list[Unit], final: State, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The standard normal noise E of a noisy variant, per parameter of its reset units (less `skip`).

    Layerprobe's one noise definition, ops.normal_noise (Philox4x32-10, csrc/philox.h): parameter p
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
                out[key] = normal_noise(variant.seed, stream, rows, final[key].numel() // max(rows, 1),
                                        final[key].dtype).view(shape)
    return out


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
