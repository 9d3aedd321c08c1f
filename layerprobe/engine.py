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
Logits are reduced to correct / loss / agreement counts at once and dropped. `_Plan` sizes the
batches, chunks and slices so the working set stays within `memory_budget` bytes; a chunk holds
the prepared entries of its reset units only, so K copies of a whole model arise only for
whole-model variants, and then only as many as the budget allows.

With `ops` (the compiled operators of csrc/, layerprobe.ops), three steps of the chain path run
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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from tqdm import tqdm
from torch import nn
from torch.func import functional_call, vmap

from layerprobe import ops as lp_ops
from layerprobe import probes
from layerprobe.models import UnitChain
from layerprobe.probes import State, Variant
from layerprobe.reference import Splits, result_row
from layerprobe.units import Unit

_FOLDABLE_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # outputs linear in (weight, bias)
_CACHE_BYTES = 32 * 2**20  # activations per slice: a slice's suffix streams through the cache
_MIN_ROWS = 256  # rows (variants × inputs) per slice below which GEMMs get too thin


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold even one variant on one input."""


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" is CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} asked for, but this machine has no CUDA device; use auto or cpu")
    return device


def evaluate(model: nn.Module, units: list[Unit], variants: list[Variant], final: State,
             source: Callable[[tuple[str, int]], State], splits: Splits, bn_stats: str,
             device: str | torch.device = "cpu", memory_budget: int = 2 * 2**30,
             progress: str | None = None, ops: bool = False) -> list[dict]:
    """Rows identical in order and content to reference.evaluate (losses to float rounding).

    `progress` labels a progress bar (shown on a terminal only); `memory_budget` is in bytes; `ops`
    uses the loaded fused operators (see layerprobe.ops.resolve for turning engine.ops into it).
    """
    device = resolve_device(device)
    _check(units, variants, bn_stats)
    if ops and not lp_ops.has_device(device):
        raise lp_ops.OpsUnavailable(f"ops=True but the fused operators are not loaded for {device.type} "
                                    "(layerprobe.ops.load / resolve first)")
    if not variants:
        return []
    sources = _load_sources(variants, source)
    model = copy.deepcopy(model).eval().to(device)  # the architecture only; weights come from states
    on_device = lambda state: {k: v.to(device) for k, v in state.items()}  # noqa: E731
    final = on_device(final)
    sources = {key: on_device(state) for key, state in sources.items()}
    chain = isinstance(model, UnitChain) and [u.name for u in units] == list(model.unit_names)
    plan = _Plan(model, units, final, variants, splits, memory_budget, chain, device, ops)

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
            # Interpolations share their start (two layer evaluations per chunk); noise comes per chunk or not.
            by_set[(v.units, v.whole, v.source if v.alpha is not None else None, v.noisy)].append(i)
        index = {u.name: u.index for u in self.units}
        widest = _widest_activation(self.model, self.splits)
        row = 4 * widest  # per input and variant: input, output and temporaries of the widest layer
        unit_bytes = {u.name: sum(self.final[k].numel() * self.final[k].element_size() for k in u.keys)
                      for u in self.units}
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
                raise MemoryBudgetError(f"engine.memory_budget of {_size(self.budget)} cannot hold one variant on "
                                        f"one input (about {_size(need)} needed); raise it")
            first = min(index[u] for u in key[0]) if self.chain and key[0] else 0
            for s in range(0, len(ids), k):
                chunk = ids[s:s + k]
                self.groups.setdefault(first, []).append(chunk)
                self.slices[tuple(chunk)] = max(1, rows // len(chunk))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def _widest_activation(model: nn.Module, splits: Splits) -> int:
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

    def folded_call(u: Unit, z: torch.Tensor) -> torch.Tensor:
        """A shared unit on the folded rows, which are the walk's own: its ReLUs may work in place."""
        module = modules[u.name]
        if not isinstance(module, nn.Sequential):
            return shared(u, z)
        for name, child in module.named_children():
            z = torch.relu_(z) if _in_place(child, z) else functional_call(child, _local(unit_state[u.name], name), (z,))
        return z

    last = units[-1]
    head = _fused_head(modules[last.name], unit_state[last.name]) if plan.ops else None
    reference = None  # the final model's predictions, needed up front by the fused head
    h, pending = x, []
    for u in units:
        for chunk_ids in plan.groups.get(u.index, []):
            chunk = [variants[i] for i in chunk_ids]
            skip = _fused_weight(u, modules[u.name]) if plan.ops and chunk[0].alpha is not None else ()
            noise = [probes.noise(v, units, final, skip) for v in chunk] if chunk[0].noisy else None
            first = _first_unit(u, modules[u.name], unit_state[u.name], chunk, final, sources, bn_stats, noise,
                                plan.ops)
            later = [(after, _stacked(after, chunk, final, sources, bn_stats, noise)
                      if after.name in chunk[0].units else None) for after in units[u.index + 1:]]
            fused_head = head is not None and u is not last and later[-1][1] is None
            if fused_head and reference is None:  # one forward of the final model per batch
                reference = functional_call(model, dict(final), (x,)).argmax(dim=1)
            step, predictions = plan.slices[tuple(chunk_ids)], []
            for s in range(0, len(h), step):
                z, folded = first(h[s:s + step]), False
                k, b = z.shape[:2]
                for after, stacked in later:
                    if fused_head and after is last:  # logits reduced tile by tile inside the operator
                        pre, weight, bias = head
                        hidden = pre(z if folded else z.flatten(0, 1))
                        counts = lp_ops.head_eval(hidden.reshape(k, b, -1), weight, bias, y[s:s + step],
                                                  reference[s:s + step])
                        _count(*counts, chunk_ids, b, split, tallies)
                        z = None
                        break
                    if stacked is not None:  # reset in this chunk too: per-variant entries
                        z = z.unflatten(0, (k, b)) if folded else z
                        z, folded = _run_stacked(modules[after.name], unit_state[after.name],
                                                 _local(stacked, after.name), z, True), False
                    else:  # shared weights: the K variants folded into the batch, one call
                        z, folded = folded_call(after, z if folded else z.flatten(0, 1)), True
                if z is not None:
                    logits = z.unflatten(0, (k, b)) if folded else z
                    predictions.append(_tally(logits, y[s:s + step], chunk_ids, split, tallies))
            if predictions:
                pending.append((torch.cat(predictions, dim=1), chunk_ids))
        h = shared(u, h)
    # The walk ends with the final model's logits: agreement is counted without a forward of its own.
    reference = h.argmax(dim=1)
    for pred, chunk_ids in pending:
        _agree(pred, reference, chunk_ids, split, tallies)


def _first_unit(unit: Unit, module: nn.Module, state: dict, chunk: list[Variant], final: State, sources: dict,
                bn_stats: str, noise: list[dict] | None, ops: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function giving the chunk's K outputs (K, B, ...) of its first reset unit on a shared input.

    Its entries are prepared once. When the unit opens with a linear or conv layer, that layer runs
    once for all K variants: a batched GEMM on the shared input (Linear) or one dense conv with
    their weights concatenated along the output channels; an α grid needs only its start and
    final weights, mixed afterwards as z_start + α·(z_final − z_start). With `ops`, an α grid's
    Linear layer is the fused interp_unit (and a following ReLU runs inside it when there is no
    noise), and its weight noise comes from noisy_unit, drawn in the kernel.
    """
    layers = _linear_split(module)
    if layers is None:
        stacked = _local(_stacked(unit, chunk, final, sources, bn_stats, noise), unit.name)
        return lambda h: _run_stacked(module, state, stacked, h, False)
    pre, (name, layer), rest = layers

    def stacked_of(child: str, module: nn.Module) -> dict[str, torch.Tensor]:
        """The chunk's reset entries of one child layer, stacked, by the names the child knows."""
        prefix = f"{unit.name}.{child}"
        keys = tuple(f"{prefix}.{k}" for k, _ in [*module.named_parameters(), *module.named_buffers()])
        return _local(_stacked(unit, chunk, final, sources, bn_stats, noise, keys), prefix)

    if chunk[0].alpha is None:
        run_layer = _batched_layer(layer, stacked_of(name, layer))
    elif ops and type(layer) is nn.Linear:  # exactly: a subclass may have its own forward
        run_layer, rest = _fused_interpolation(unit, name, sources[chunk[0].source], state, chunk, noise, rest)
    else:
        # One source for the chunk (the plan groups interpolations by it): start and final, then mix.
        start, trained = _local(sources[chunk[0].source], f"{unit.name}.{name}"), _local(state, name)
        ends = _batched_layer(layer, {k: torch.stack([start[k], trained[k]]) for k in trained})
        device, dtype = trained["weight"].device, trained["weight"].dtype
        alphas = torch.tensor([v.alpha for v in chunk], dtype=dtype, device=device)
        sigmas = torch.tensor([v.sigma or 0.0 for v in chunk], dtype=dtype, device=device)
        perturb = _batched_layer(layer, {k: torch.stack([e[f"{unit.name}.{name}.{k}"] for e in noise]).to(device)
                                         for k in trained}) if noise is not None else None

        def run_layer(a: torch.Tensor) -> torch.Tensor:
            z = ends(a)
            shape = (-1, *[1] * (z.dim() - 1))
            z = torch.addcmul(z[:1], alphas.view(shape), z[1:] - z[:1])
            return z if perturb is None else z.add_(sigmas.view(shape) * perturb(a))

    rest_entries = [(child, _local(state, child_name), stacked_of(child_name, child)) for child_name, child in rest]

    def run(h: torch.Tensor) -> torch.Tensor:
        z = run_layer(pre(h))
        k, b = z.shape[:2]
        for child, own, stacked in rest_entries:
            if stacked:
                z = _run_stacked(child, own, stacked, z, True)
            else:
                z = z.flatten(0, 1)
                z = torch.relu_(z) if _in_place(child, z) else functional_call(child, own, (z,))
                z = z.unflatten(0, (k, b))
        return z

    return run


def _fused_interpolation(unit: Unit, name: str, source: State, state: dict, chunk: list[Variant],
                         noise: list[dict] | None, rest: list) -> tuple[Callable, list]:
    """The first Linear layer of an α chunk through the fused operators: act(z₀ + α(z_T − z₀)) in
    one interp_unit call, plus for criticality σ·(a E_kᵀ) from noisy_unit (weight 0, the variants'
    seeds) and σ·e_k for the bias. Returns the layer's function and the children still to run."""
    start, trained = _local(source, f"{unit.name}.{name}"), _local(state, name)
    weight = trained["weight"]
    alphas = torch.tensor([v.alpha for v in chunk], dtype=weight.dtype, device=weight.device)
    relu = noise is None and bool(rest) and type(rest[0][1]) is nn.ReLU  # noise goes in before the ReLU
    activation, rest = ("relu", rest[1:]) if relu else ("none", rest)
    if noise is not None:
        sigmas = torch.tensor([v.sigma for v in chunk], dtype=weight.dtype, device=weight.device)
        seeds = torch.tensor([v.seed for v in chunk], dtype=torch.int64)
        stream = unit.params.index(f"{unit.name}.{name}.weight")  # as in probes.noise
        zero = torch.zeros_like(weight)
        bias_key = f"{unit.name}.{name}.bias"
        bias_noise = (sigmas.view(-1, 1, 1) * torch.stack([e[bias_key] for e in noise]).to(weight.device).unsqueeze(1)
                      if bias_key in noise[0] else None)

    def run_layer(a: torch.Tensor) -> torch.Tensor:
        flat = a.reshape(-1, a.shape[-1])
        z = lp_ops.interp_unit(flat, start["weight"], start.get("bias"), weight, trained.get("bias"), alphas, activation)
        if noise is not None:
            z.add_(lp_ops.noisy_unit(flat, zero, None, sigmas, seeds, stream))
            if bias_noise is not None:
                z.add_(bias_noise)
        return z.view(len(chunk), *a.shape[:-1], -1)

    return run_layer, rest


def _fused_weight(unit: Unit, module: nn.Module) -> tuple[str, ...]:
    """The weight whose noise the fused noisy_unit draws itself: a unit's first layer, if exactly a
    Linear (the condition under which _first_unit runs it fused)."""
    layers = _linear_split(module)
    return (f"{unit.name}.{layers[1][0]}.weight",) if layers and type(layers[1][1]) is nn.Linear else ()


def _fused_head(module: nn.Module, state: dict):
    """(pre, weight, bias) when the unit is parameter-free layers then a Linear (the fused head's
    shape); else None."""
    if not isinstance(module, nn.Sequential) or not len(module):
        return None
    *before, (name, layer) = module.named_children()
    if type(layer) is not nn.Linear or any(any(True for _ in c.parameters()) or any(True for _ in c.buffers())
                                           for _, c in before):
        return None
    own = _local(state, name)
    return nn.Sequential(*[c for _, c in before]), own["weight"], own.get("bias")


def _count(correct: torch.Tensor, loss: torch.Tensor, agree: torch.Tensor, ids: list[int], b: int, split: str,
           tallies: dict) -> None:
    for i, c, l, a in zip(ids, correct.tolist(), loss.tolist(), agree.tolist()):
        t = tallies[i, split]
        t.correct, t.loss, t.agree, t.n = t.correct + c, t.loss + l, t.agree + a, t.n + b


def _batched_layer(layer: nn.Module, stacked: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
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
    joined = {key: value.flatten(0, 1) for key, value in stacked.items()}  # convs: one dense conv
    return lambda a: functional_call(layer, joined, (a,)).unflatten(1, (m, -1)).movedim(1, 0)


def _in_place(child: nn.Module, z: torch.Tensor) -> bool:
    """A ReLU may overwrite z when z is a tensor the walk made (not a view of a shared input)."""
    return type(child) is nn.ReLU and z._base is None


def _linear_split(module: nn.Module):
    """(pre, (name, layer), rest) when the unit is a Sequential whose first layer with parameters is
    linear in its weights (exactly one of _FOLDABLE_LINEAR: a subclass may have its own forward,
    which only functional_call honours) and preceded only by parameter-free layers; else None."""
    if not isinstance(module, nn.Sequential):
        return None
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            if type(child) not in _FOLDABLE_LINEAR or getattr(child, "groups", 1) != 1:
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
    outside = set(final) - {k for u in units for k in u.keys}
    for chunks in plan.groups.values():
        for chunk_ids in chunks:
            chunk = [variants[i] for i in chunk_ids]
            noise = [probes.noise(v, units, final) for v in chunk] if chunk[0].noisy else None
            stacked = {}
            for u in units:
                if u.name in chunk[0].units:
                    stacked.update(_stacked(u, chunk, final, sources, bn_stats, noise))
            if chunk[0].whole:  # entries outside every unit come from the source too
                stacked.update({k: torch.stack([probes.entry(v, k, final, sources[v.source]) for v in chunk])
                                for k in outside})
            shared = {k: v for k, v in final.items() if k not in stacked}
            step = plan.slices[tuple(chunk_ids)]
            for s in range(0, len(x), step):
                logits = _run_stacked(model, shared, stacked, x[s:s + step], False)
                _agree(_tally(logits, y[s:s + step], chunk_ids, split, tallies), reference[s:s + step], chunk_ids,
                       split, tallies)
