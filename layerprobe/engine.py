"""The engine: the one place that evaluates variants, many at once, with the reference's results.

For a chain of units (models.UnitChain) the variants are grouped by the set of units they reset;
a group whose first reset unit is d shares the prefix (units before d), so that is computed once
per batch of inputs and reused by every group starting at d. The group's K variants then run the
reset unit in one batched call (their stacked entries, torch.func.vmap) and are folded into the
batch dimension for every later unit whose weights they share, so each such unit is one large
GEMM/conv instead of K small ones. Linear and conv layers are linear in their weights, so an α
grid (interpolation, criticality) costs two evaluations of the reset layer, not one per α:
    W(α)·a + b(α) = z_start + α·(z_final − z_start).
Logits are reduced to correct / loss / agreement counts per chunk and dropped. K and the number
of inputs per batch are chosen so the working set stays within `memory_budget` bytes; at most K
copies of one unit's entries exist at a time.

Any other model goes through the general path: vmap of functional_call over the K variants'
stacked reset entries, shared entries passed once — correct for any architecture, without prefix
sharing.
"""
from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from tqdm import tqdm
from torch import nn
from torch.func import functional_call, vmap

from layerprobe import probes
from layerprobe.models import UnitChain
from layerprobe.probes import State, Variant
from layerprobe.reference import Splits, result_row
from layerprobe.units import Unit

_FOLDABLE_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # outputs linear in (weight, bias)
_MIN_BATCH = 256  # inputs per batch below which GEMMs get too thin to be worth a bigger K


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold even one variant on one input."""


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" is CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate(model: nn.Module, units: list[Unit], variants: list[Variant], final: State,
             source: Callable[[tuple[str, int]], State], splits: Splits, bn_stats: str,
             device: str | torch.device = "cpu", memory_budget: int = 2 * 2**30,
             progress: str | None = None) -> list[dict]:
    """Rows identical in order and content to reference.evaluate (losses to float rounding).

    `progress` labels a progress bar (shown on a terminal only); `memory_budget` is in bytes.
    """
    device = resolve_device(device)
    _check(units, variants, bn_stats)
    sources = _load_sources(variants, source)
    model = copy.deepcopy(model).eval().to(device)  # the architecture only; weights come from states
    on_device = lambda state: {k: v.to(device) for k, v in state.items()}  # noqa: E731
    final = on_device(final)
    sources = {key: on_device(state) for key, state in sources.items()}
    chain = isinstance(model, UnitChain) and [u.name for u in units] == list(model.unit_names)
    plan = _Plan(model, units, final, variants, splits, bn_stats, memory_budget, chain)

    tallies = {(i, s): _Tally() for i in range(len(variants)) for s in splits}
    batches = [(split, start) for split, (x, _) in splits.items() for start in range(0, len(x), plan.batch)]
    walk = _chain_batch if chain else _general_batch
    with torch.no_grad(), _full_precision():
        for split, start in tqdm(batches, desc=progress, unit="batch", disable=None if progress else True):
            x, y = splits[split]
            xb, yb = x[start:start + plan.batch].to(device), y[start:start + plan.batch].to(device)
            walk(model, units, final, sources, variants, plan, xb, yb, split, tallies, bn_stats)
    return [result_row(v, bn_stats, s, tallies[i, s].result()) for i, v in enumerate(variants) for s in splits]


@contextlib.contextmanager
def _full_precision():
    """No TF32 on CUDA (cuDNN uses it for convs by default): probes measure the float32 model."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# Checks before any evaluation
# ---------------------------------------------------------------------------------------------

def _check(units: list[Unit], variants: list[Variant], bn_stats: str) -> None:
    if bn_stats not in probes.BN_STATS:
        raise ValueError(f"bn_stats must be one of {probes.BN_STATS}, got {bn_stats!r}")
    names = {u.name for u in units}
    for v in variants:
        unknown = [u for u in v.units if u not in names]
        if unknown:
            raise ValueError(f"{v.probe} variant {v.label!r} resets unknown unit(s) {unknown}; "
                             f"units: {', '.join(u.name for u in units)}")
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


# ---------------------------------------------------------------------------------------------
# Tallies: what is kept of the logits
# ---------------------------------------------------------------------------------------------

@dataclass
class _Tally:
    correct: int = 0
    agree: int = 0
    loss: float = 0.0
    n: int = 0

    def result(self) -> dict:
        return {"error": (self.n - self.correct) / self.n, "loss": self.loss / self.n, "agreement": self.agree / self.n,
                "n": self.n}


def _tally(logits: torch.Tensor, y: torch.Tensor, ids: list[int], split: str, tallies: dict) -> torch.Tensor:
    """Reduce (K, B, C) logits to per-variant counts, the loss in float64 as the reference does;
    returns the predictions (K, B) for the agreement, counted once the final model's are known."""
    k, b = logits.shape[:2]
    flat = logits.reshape(k * b, -1)
    pred = flat.argmax(dim=1).view(k, b)
    loss = F.cross_entropy(flat.double(), y.repeat(k), reduction="none").view(k, b).sum(dim=1)
    correct = (pred == y).sum(dim=1).tolist()
    for i, c, l in zip(ids, correct, loss.tolist()):
        t = tallies[i, split]
        t.correct, t.loss, t.n = t.correct + c, t.loss + l, t.n + b
    return pred


def _agree(pred: torch.Tensor, reference: torch.Tensor, ids: list[int], split: str, tallies: dict) -> None:
    for i, a in zip(ids, (pred == reference).sum(dim=1).tolist()):
        tallies[i, split].agree += a


# ---------------------------------------------------------------------------------------------
# Planning: group the variants, pick batch sizes for the budget
# ---------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    model: nn.Module
    units: list[Unit]
    final: State
    variants: list[Variant]
    splits: Splits
    bn_stats: str
    budget: int
    chain: bool
    groups: dict[int, list[list[int]]] = field(default_factory=dict)  # first reset unit → chunks of ids
    batch: int = 0

    def __post_init__(self) -> None:
        by_set = defaultdict(list)
        for i, v in enumerate(self.variants):
            # Interpolations share their start (two layer evaluations per chunk); noise comes per chunk or not.
            by_set[(v.units, v.whole, v.source if v.alpha is not None else None, v.noisy)].append(i)
        index = {u.name: u.index for u in self.units}
        row_bytes = _row_bytes(self.model, self.splits, self.chain)
        unit_bytes = {u.name: sum(self.final[k].numel() * self.final[k].element_size() for k in u.keys)
                      for u in self.units}
        # Per variant: its rows at the widest point, and the stacked entries of its biggest reset unit
        # (twice: the entries and their noise, or a layer's start and final outputs).
        weights = {key: 2 * max(unit_bytes[u] for u in key[0]) if key[0] else 0 for key in by_set}
        biggest = max(len(ids) for ids in by_set.values()) if by_set else 1
        n_max = max((len(x) for x, _ in self.splits.values()), default=1)
        batch = min(n_max, max(1, (self.budget - biggest * max(weights.values(), default=0))
                               // ((biggest + 1) * row_bytes)))
        batch = max(batch, min(n_max, _MIN_BATCH))
        while True:
            room = {key: (self.budget - batch * row_bytes) // (batch * row_bytes + weights[key]) for key in by_set}
            if all(r >= 1 for r in room.values()) or batch == 1:
                break
            batch = max(1, batch // 2)
        if any(r < 1 for r in room.values()):
            need = row_bytes * 2 + max(weights.values())
            raise MemoryBudgetError(f"engine.memory_budget of {self.budget / 2**20:.1f} MB cannot hold one variant "
                                    f"on one input (about {need / 2**20:.1f} MB needed); raise it")
        self.batch = batch
        for key, ids in by_set.items():
            first = min(index[u] for u in key[0]) if self.chain and key[0] else 0
            k = max(1, int(room[key]))
            self.groups.setdefault(first, []).extend(ids[s:s + k] for s in range(0, len(ids), k))


def _row_bytes(model: nn.Module, splits: Splits, chain: bool) -> int:
    """Working bytes per input and variant: a few times the widest activation (one forward of one input)."""
    widest = 0

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
    return 4 * widest  # the input, the output and a temporary of the widest layer, with slack


# ---------------------------------------------------------------------------------------------
# Entries of the variants: stacked per unit, only when a unit is reset
# ---------------------------------------------------------------------------------------------

def _stacked(unit: Unit, chunk: list[Variant], final: State, sources: dict, bn_stats: str,
             noise: list[dict] | None, keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The unit's reset entries of each variant of the chunk, stacked along a new first dim."""
    reset = probes.reset_keys(unit, chunk[0].whole, bn_stats)
    out = {}
    for key in keys if keys is not None else reset:
        if key not in reset:
            continue
        values = [probes.entry(v, key, final, sources[v.source]) for v in chunk]
        if noise is not None and key in noise[0]:
            values = [val + v.sigma * e[key].to(val.device) for val, v, e in zip(values, chunk, noise)]
        out[key] = torch.stack(values)
    return out


def _local(entries: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under `prefix.` with the prefix removed (the names a submodule knows them by)."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in entries.items() if k.startswith(prefix + ".")}


def _run_stacked(module: nn.Module, shared: dict, stacked: dict, h: torch.Tensor, batched_input: bool) -> torch.Tensor:
    """module with K sets of `stacked` entries on h (K, B, ...) or on a shared h (B, ...)."""
    def call(entries, x):
        return functional_call(module, {**shared, **entries}, (x,))
    return vmap(call, in_dims=(0, 0 if batched_input else None))(stacked, h)


# ---------------------------------------------------------------------------------------------
# The chain path
# ---------------------------------------------------------------------------------------------

def _chain_batch(model: UnitChain, units: list[Unit], final: State, sources: dict, variants: list[Variant],
                 plan: _Plan, x: torch.Tensor, y: torch.Tensor, split: str, tallies: dict, bn_stats: str) -> None:
    unit_state = {u.name: _local(final, u.name) for u in units}
    modules = {u.name: model.get_submodule(u.name) for u in units}

    def shared(u: Unit, h: torch.Tensor) -> torch.Tensor:
        return functional_call(modules[u.name], unit_state[u.name], (h,))

    h, pending = x, []
    for u in units:
        for chunk_ids in plan.groups.get(u.index, []):
            chunk = [variants[i] for i in chunk_ids]
            noise = [probes.noise(v, units, final) for v in chunk] if chunk[0].noisy else None
            k, b = len(chunk), len(x)
            z, folded = _first_unit(u, modules[u.name], unit_state[u.name], chunk, final, sources, bn_stats, noise, h)
            for later in units[u.index + 1:]:
                if later.name in chunk[0].units:
                    if folded:
                        z = z.unflatten(0, (k, b))
                    stacked = _local(_stacked(later, chunk, final, sources, bn_stats, noise), later.name)
                    z, folded = _run_stacked(modules[later.name], unit_state[later.name], stacked, z, True), False
                else:
                    if not folded:
                        z = z.flatten(0, 1)
                    z, folded = shared(later, z), True
            logits = z.unflatten(0, (k, b)) if folded else z
            pending.append((_tally(logits, y, chunk_ids, split, tallies), chunk_ids))
        h = shared(u, h)
    # The walk ends with the final model's logits: agreement is counted without a forward of its own.
    reference = h.argmax(dim=1)
    for pred, chunk_ids in pending:
        _agree(pred, reference, chunk_ids, split, tallies)


def _first_unit(unit: Unit, module: nn.Module, state: dict, chunk: list[Variant], final: State, sources: dict,
                bn_stats: str, noise: list[dict] | None, h: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The chunk's K outputs of its first reset unit on the shared input h: (K, B, ...), not folded.

    When the unit opens with a linear or conv layer, that layer runs once for all variants, their
    weights concatenated along the output features (one dense GEMM/conv, not K small or grouped
    ones); for an α grid only the start and final weights are needed, mixed afterwards.
    """
    layers = _linear_split(module)
    if layers is None:
        stacked = _local(_stacked(unit, chunk, final, sources, bn_stats, noise), unit.name)
        return _run_stacked(module, state, stacked, h, False), False
    pre, (name, layer), rest = layers
    a = pre(h)
    keys = [k for k in state if k.startswith(name + ".")]  # the layer's weight (and bias), unit-local
    cut = len(name) + 1
    if chunk[0].alpha is None:
        z = _concatenated(layer, [{k[cut:]: entries[k] for k in keys}
                                  for entries in _per_variant(unit, chunk, final, sources, noise, keys)], a)
    else:
        # One source for the chunk (the plan groups interpolations by it): start and final, then mix.
        start = _local(sources[chunk[0].source], unit.name)
        ends = _concatenated(layer, [{k[cut:]: start[k] for k in keys}, {k[cut:]: state[k] for k in keys}], a)
        shape = (-1, *[1] * (ends.dim() - 1))
        alphas = torch.tensor([v.alpha for v in chunk], dtype=ends.dtype, device=ends.device).view(shape)
        z = torch.addcmul(ends[:1], alphas, ends[1:] - ends[:1])
        if noise is not None:
            sigmas = torch.tensor([v.sigma for v in chunk], dtype=z.dtype, device=z.device).view(shape)
            z = z + sigmas * _concatenated(layer, [{k[cut:]: e[f"{unit.name}.{k}"].to(a.device) for k in keys}
                                                   for e in noise], a)
    k, b = z.shape[:2]
    for child_name, child in rest:
        child_keys = tuple(f"{unit.name}.{child_name}.{k}" for k in
                           [*dict(child.named_parameters()), *dict(child.named_buffers())])
        stacked = _local(_stacked(unit, chunk, final, sources, bn_stats, noise, child_keys), f"{unit.name}.{child_name}")
        if stacked:
            z = _run_stacked(child, _local(state, child_name), stacked, z, True)
        else:
            z = functional_call(child, _local(state, child_name), (z.flatten(0, 1),)).unflatten(0, (k, b))
    return z, False


def _per_variant(unit: Unit, chunk: list[Variant], final: State, sources: dict, noise: list[dict] | None,
                 keys: list[str]) -> list[dict[str, torch.Tensor]]:
    """Each variant's values of the unit-local `keys` (a layer's parameters, always reset)."""
    out = []
    for j, v in enumerate(chunk):
        values = {}
        for key in keys:
            full = f"{unit.name}.{key}"
            value = probes.entry(v, full, final, sources[v.source])
            if noise is not None:
                value = value + v.sigma * noise[j][full].to(value.device)
            values[key] = value
        out.append(values)
    return out


def _concatenated(layer: nn.Module, entries: list[dict[str, torch.Tensor]], a: torch.Tensor) -> torch.Tensor:
    """The layer under M sets of entries on one input, as one call: (M, B, ...)."""
    joined = {key: torch.cat([e[key] for e in entries]) for key in entries[0]}
    out = functional_call(layer, joined, (a,))
    channel = -1 if isinstance(layer, nn.Linear) else 1
    return out.unflatten(channel, (len(entries), -1)).movedim(channel - 1 if channel < 0 else channel, 0)


def _linear_split(module: nn.Module):
    """(pre, (name, layer), rest) when the unit is a Sequential whose first layer with parameters is
    linear in its weights and preceded only by parameter-free layers; else None."""
    if not isinstance(module, nn.Sequential):
        return None
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            if not isinstance(child, _FOLDABLE_LINEAR) or getattr(child, "groups", 1) != 1:
                return None  # grouped convs would mix the concatenated variants' channels
            pre = nn.Sequential(*[c for _, c in children[:i]])
            return pre, (name, child), children[i + 1:]
    return None


# ---------------------------------------------------------------------------------------------
# The general path
# ---------------------------------------------------------------------------------------------

def _general_batch(model: nn.Module, units: list[Unit], final: State, sources: dict, variants: list[Variant],
                   plan: _Plan, x: torch.Tensor, y: torch.Tensor, split: str, tallies: dict, bn_stats: str) -> None:
    reference = functional_call(model, dict(final), (x,)).argmax(dim=1)
    for chunks in plan.groups.values():
        for chunk_ids in chunks:
            chunk = [variants[i] for i in chunk_ids]
            noise = [probes.noise(v, units, final) for v in chunk] if chunk[0].noisy else None
            stacked = {}
            for u in units:
                if u.name in chunk[0].units:
                    stacked.update(_stacked(u, chunk, final, sources, bn_stats, noise))
            if chunk[0].whole:  # entries outside every unit come from the source too
                outside = set(final) - {k for u in units for k in u.keys}
                stacked.update({k: torch.stack([probes.entry(v, k, final, sources[v.source]) for v in chunk])
                                for k in outside})
            shared = {k: v for k, v in final.items() if k not in stacked}
            logits = _run_stacked(model, shared, stacked, x, False)
            _agree(_tally(logits, y, chunk_ids, split, tallies), reference, chunk_ids, split, tallies)
