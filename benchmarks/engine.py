"""Benchmark: the batched engine against the plain loop, torch.func vmap, and a compute floor.

Run from the repository root:

    python benchmarks/engine.py --quick                 # shrunken sizes: under a minute on 2 CPU cores
    python benchmarks/engine.py                         # full sizes (2 CPU cores: about half an hour)
    python benchmarks/engine.py --device cuda --cases a,b --json engine.json

Every evaluator runs in this process on the same model, checkpoints, inputs and variants (all
already on the device, so nobody pays host-to-device copies), and answers with one row per
variant and split. The evaluators:

  engine  layerprobe.probing.engine.evaluate (prefix shared, variants folded into the batch, α-linearity)
  loop    layerprobe.probing.reference.evaluate: one variant at a time through functional_call on its
          composed state dict, inputs in batches of 1,000 — the plain loop users write (an
          inline loop without the reference's bookkeeping timed the same); case f: the Hugging Face
          model's own forward with each variant's weights loaded
  vmap    torch.func: chunks of variants' full composed state dicts stacked, vmap(functional_call)
          over them, inputs in batches of 1,000; chunk size from the same memory budget
  floor   the minimal multiply-adds of the work ÷ the float32 matmul rate measured here: the final
          model once per split (it gives every prefix and the reference predictions), then per
          variant its first reset unit and everything after it; an α grid costs its (linear/conv)
          unit 2 evaluations per (unit, source) instead of one per α

The cases (checkpoints are not trained: straight paths between two draws of the initializers, the
final state last; inputs are standard normal, labels the final model's predictions with 10% random):

  a  FCN 5×1024, N = 10,000, 20 checkpoints × every unit, reinit (no fullmodel rows)
  b  the same FCN, a 21-point α grid from checkpoint 0 to the final state × every unit
  c  VGG (3×32×32; stages 32, 64, 128; fc 256; batch norm), N = 2,000, 5 checkpoints × every unit
  d  the VGG, 100 checkpoints × 5 units = 500 variants, N = 1,000, the engine under a 512 MB budget
     in a fresh child process (MALLOC_ARENA_MAX=1: glibc's per-thread arenas would otherwise keep
     freed memory), its peak memory measured (vmap not timed on the CPU: too slow)
  e  a byte-level Transformer LM (4 blocks × width 256, 4 heads, vocabulary 256), N = 32 sequences
     of 128 tokens (4,096 predicted tokens), every unit (embed, block0..3, head) × 10 checkpoints and
     × a 21-point α grid; inputs are uniform random bytes, labels the final model's next-token
     predictions (10% random). The floor counts each attention's two T×T products as well
  f  a Pythia-style Hugging Face GPT-NeoX (layerprobe.models.pretrained.build: 12 layers × width 128,
     4 heads, parallel residual, rotary on a quarter of each head, vocabulary 4,096), N = 16 sequences
     of 128 tokens, every unit (embed, layer0..11, final_norm, head) × 10 checkpoints (reinit). Its loop
     is the Hugging Face model's own: each variant's weights loaded (load_state_dict), its forward run;
     vmap is not timed (it is the loop's work, whole model per variant), nor are launches counted (slow
     there); the engine gets an 8 GB budget (a batch's logits of 150 variants). Needs transformers (".[hf]")

Timing: each evaluator is first called once on a small warm-up (2 variants, the first 1,000
inputs), then timed over one full call (time.perf_counter, torch.cuda.synchronize on CUDA).
Arithmetic is plain float32 everywhere: TF32 is switched off on CUDA (cuDNN uses it for
convolutions by default), so the floor's rate is float32's and evaluators can agree exactly.

Columns: case; variants (number of probe variants; one split); engine_s, loop_s, vmap_s, floor_s
(seconds); speedup_vs_loop = loop_s / engine_s, speedup_vs_vmap = vmap_s / engine_s; peak_mb (case
d only: the engine's peak memory above the level after setup — on CUDA the allocator's
max_memory_allocated, on the CPU the RSS growth, sampled every millisecond and checked against the
kernel's high-water mark); max_error_diff = max |engine error − loop error| over all rows (must be
0: equal errors mean equally many correct predictions); engine_launches_per_variant and
loop_launches_per_variant, the compute operators each evaluator dispatches in one full call ÷ the
variants, and engine_syncs, loop_syncs, its host syncs in that call (counted as benchmarks/launches.py
says, in an untimed call of its own: views, reshapes, allocations and meta tensors launch nothing).
`--json PATH` writes these fields per case, null where not measured. The exit status is 1 when an
error differs.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's layerprobe
sys.path.insert(0, str(Path(__file__).resolve().parent))  # launches.py beside this script
import launches  # noqa: E402

from layerprobe import models  # noqa: E402
from layerprobe.base.metrics import classify  # noqa: E402
from layerprobe.kinds import interpolate, reinit  # noqa: E402
from layerprobe.models.families.transformer import Attention  # noqa: E402
from layerprobe.models.units import FULLMODEL, Unit, inventory  # noqa: E402
from layerprobe.probing import compose, engine, reference  # noqa: E402
from layerprobe.probing import ops as lp_ops  # noqa: E402
from layerprobe.probing.variants import Variant  # noqa: E402
from layerprobe.probing.variants import row as result_row  # noqa: E402

BATCH = 1000  # inputs per batch for the loop and vmap
FIELDS = (
    "case",
    "variants",
    "engine_s",
    "ops_s",
    "loop_s",
    "vmap_s",
    "floor_s",
    "speedup_vs_loop",
    "speedup_vs_vmap",
    "peak_mb",
    "max_error_diff",
    "engine_launches_per_variant",
    "loop_launches_per_variant",
    "engine_syncs",
    "loop_syncs",
)
MEASURED = ("error", "loss", "agreement", "n")  # a row's other keys identify its variant and split


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    model: nn.Module
    units: list[Unit]
    variants: list[Variant]
    checkpoints: list[dict[str, torch.Tensor]]  # ("checkpoint", τ) → checkpoints[τ]; the last is final
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    input_shape: tuple[int, ...]
    bn_stats: str = "same_source"
    loop: Callable[[Case], list[dict]] | None = None  # the plain loop, where it is not reference.evaluate

    @property
    def final(self) -> dict[str, torch.Tensor]:
        return self.checkpoints[-1]

    def source(self, key: tuple[str, int]) -> dict[str, torch.Tensor]:
        kind, index = key
        if kind != "checkpoint":
            raise KeyError(key)
        return self.checkpoints[index]

    def warmup(self) -> Case:
        """The small call each evaluator makes before it is timed."""
        splits = {s: (x[:BATCH], y[:BATCH]) for s, (x, y) in self.splits.items()}
        return replace(self, variants=self.variants[:2], splits=splits)


def trajectory(factory: Callable[[], nn.Module], count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`count` stand-in checkpoints: a straight path from one draw of the initializers to another."""
    start, end = models.fresh_state(factory, seed), models.fresh_state(factory, seed + 1)
    generator = torch.Generator().manual_seed(seed)
    for key, value in end.items():  # batch-norm statistics that are not the identity
        if key.endswith("running_mean"):
            value.normal_(0.0, 0.1, generator=generator)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5, generator=generator)
    steps = [k / (count - 1) for k in range(count)] if count > 1 else [1.0]
    return [
        {k: start[k].lerp(end[k], t) if start[k].is_floating_point() else end[k].clone() for k in end} for t in steps
    ]


def build(
    name: str,
    factory: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    n: int,
    count: int,
    variants: Callable[[list[Unit]], list[Variant]],
    device: torch.device,
    seed: int = 0,
    vocabulary: int | None = None,
) -> Case:
    """Checkpoints, N random inputs with labels from the final model (10% random), the variants.
    With a `vocabulary` the inputs are token ids and the labels one per position."""
    model = factory().eval()
    units = inventory(model)
    checkpoints = trajectory(factory, count, seed)
    generator = torch.Generator().manual_seed(seed + 2)
    if vocabulary is None:
        x = torch.randn(n, *input_shape, generator=generator)
    else:
        x = torch.randint(0, vocabulary, (n, *input_shape), generator=generator)
    classes = vocabulary or 10
    predict = lambda b: functional_call(model, checkpoints[-1], (b,))  # noqa: E731
    y = classify(predict, x, torch.zeros(n, *input_shape[: 1 if vocabulary else 0], dtype=torch.long))["predictions"]
    noisy = torch.rand(y.shape, generator=generator) < 0.1
    y[noisy] = torch.randint(0, classes, (int(noisy.sum()),), generator=generator)
    on = lambda state: {k: v.to(device) for k, v in state.items()}  # noqa: E731
    return Case(
        name,
        model.to(device),
        units,
        [v for v in variants(units) if v.label != FULLMODEL],
        [on(c) for c in checkpoints],
        {"test": (x.to(device), y.to(device))},
        tuple(input_shape),
    )


def fcn_factory(width: int, depth: int = 5) -> Callable[[], nn.Module]:
    return lambda: models.fcn((784,), 10, depth=depth, width=width)


def vgg_factory(size: int = 32) -> Callable[[], nn.Module]:
    return lambda: models.vgg((3, size, size), 10, stages=[[32], [64], [128]], fc=[256], batch_norm=True)


def case_a(n: int, checkpoints: int, width: int = 1024, depth: int = 5, device="cpu") -> Case:
    """FCN, every unit reset to every checkpoint."""
    return build(
        "a",
        fcn_factory(width, depth),
        (784,),
        n,
        checkpoints,
        lambda units: reinit.describe(units, list(range(checkpoints))),
        torch.device(device),
    )


def case_b(n: int, grid: int, width: int = 1024, depth: int = 5, device="cpu") -> Case:
    """FCN, every unit interpolated from checkpoint 0 to the final state on an α grid."""
    alphas = [k / (grid - 1) for k in range(grid)]
    return build(
        "b",
        fcn_factory(width, depth),
        (784,),
        n,
        2,
        lambda units: interpolate.describe(units, alphas),
        torch.device(device),
    )


def case_c(n: int, checkpoints: int, size: int = 32, device="cpu") -> Case:
    """VGG with batch norm, every unit reset to every checkpoint."""
    return build(
        "c",
        vgg_factory(size),
        (3, size, size),
        n,
        checkpoints,
        lambda units: reinit.describe(units, list(range(checkpoints))),
        torch.device(device),
    )


def case_d(n: int, checkpoints: int, size: int = 32, device="cpu") -> Case:
    """Case c with many checkpoints: the memory case."""
    return replace(case_c(n, checkpoints, size, device), name="d")


def lm_factory(layers: int = 4, width: int = 256, heads: int = 4, context: int = 128) -> Callable[[], nn.Module]:
    return lambda: models.MODELS["transformer_lm"]((context,), 256, layers=layers, width=width, heads=heads)


def case_e(n: int, checkpoints: int, grid: int, context: int = 128, device="cpu") -> Case:
    """A byte-level Transformer LM, every unit reset to every checkpoint and interpolated on an α grid."""
    alphas = [k / (grid - 1) for k in range(grid)]
    return build(
        "e",
        lm_factory(context=context),
        (context,),
        n,
        checkpoints,
        lambda units: reinit.describe(units, list(range(checkpoints))) + interpolate.describe(units, alphas),
        torch.device(device),
        vocabulary=256,
    )


def neox_config(layers: int = 12, width: int = 128, heads: int = 4, vocabulary: int = 4096, context: int = 128):
    from transformers import GPTNeoXConfig

    # Pythia's shape: parallel residual, rotary on a quarter of each head, MLP 4× the width
    return GPTNeoXConfig(
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        vocab_size=vocabulary,
        max_position_embeddings=context,
        rotary_pct=0.25,
        use_parallel_residual=True,
        bos_token_id=0,
        eos_token_id=0,
    )


def case_f(
    n: int,
    checkpoints: int,
    layers: int = 12,
    width: int = 128,
    vocabulary: int = 4096,
    context: int = 128,
    device="cpu",
) -> Case:
    """A Hugging Face GPT-NeoX, every unit reset to every checkpoint; the loop is the model's own forward."""
    from layerprobe.models import pretrained

    config = neox_config(layers, width, vocabulary=vocabulary, context=context)
    case = build(
        "f",
        pretrained.factory(config),
        (context,),
        n,
        checkpoints,
        lambda units: reinit.describe(units, list(range(checkpoints))),
        torch.device(device),
        vocabulary=vocabulary,
    )
    return replace(case, loop=hf_loop)


@torch.no_grad()
def hf_loop(case: Case) -> list[dict]:
    """The plain loop on a Hugging Face model: per variant, its composed weights loaded into the model
    (under the model's own keys) and the model's own forward run."""
    from layerprobe.models import pretrained

    hf = copy.deepcopy(pretrained.hf_model(case.model)).eval()
    keys = pretrained.hf_keys(case.model)

    def forward(state: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        hf.load_state_dict({keys[k]: v for k, v in state.items()}, strict=True)
        return lambda x: hf(input_ids=x, use_cache=False).logits

    reference = {
        s: classify(forward(case.final), x, y, batch_size=BATCH)["predictions"] for s, (x, y) in case.splits.items()
    }
    rows = []
    for v in case.variants:
        run = forward(compose.compose(v, case.units, case.final, case.source(v.source), case.bn_stats))
        for s, (x, y) in case.splits.items():
            rows.append(result_row(v, case.bn_stats, s, classify(run, x, y, reference=reference[s], batch_size=BATCH)))
    return rows


CASES = {"a": case_a, "b": case_b, "c": case_c, "d": case_d, "e": case_e, "f": case_f}
NEEDS_TRANSFORMERS = {"f"}
NO_VMAP = {"f"}  # vmap there is the loop's work (the whole model per variant): not timed
# The engine keeps a batch's logits of every variant (vocabulary 4,096 × 128 positions × 150 variants):
# its plan needs about 3 GB per sequence, so case f gets 8 GB instead of --budget-mb.
CASE_BUDGETS = {"f": 8 * 2**30}
NO_COUNT = {"f"}  # counting its launches (per operator) took about 9 of its 11 minutes: not counted
FULL = {
    "a": dict(n=10_000, checkpoints=20),
    "b": dict(n=10_000, grid=21),
    "c": dict(n=2_000, checkpoints=5),
    "d": dict(n=1_000, checkpoints=100),
    "e": dict(n=32, checkpoints=10, grid=21),
    "f": dict(n=16, checkpoints=10),
}
QUICK = {
    "a": dict(n=1_000, checkpoints=3),
    "b": dict(n=1_000, grid=4),
    "c": dict(n=200, checkpoints=3),
    "d": dict(n=100, checkpoints=20),
    "e": dict(n=4, checkpoints=3, grid=4, context=32),
    "f": dict(n=4, checkpoints=3, layers=2, vocabulary=256, context=32),
}
ARENAS = "MALLOC_ARENA_MAX"
MEMORY_CASES = {"d": 512 * 2**20}  # case → the engine's memory budget there, measured in a child process


# ---------------------------------------------------------------------------------------------
# Evaluators: each returns the rows of reference.evaluate
# ---------------------------------------------------------------------------------------------


def run_engine(case: Case, device: torch.device, budget: int, ops: bool = False) -> list[dict]:
    return engine.evaluate(
        case.model,
        case.units,
        case.variants,
        case.final,
        case.source,
        case.splits,
        case.bn_stats,
        device=device,
        memory_budget=budget,
        ops=ops,
    )


def run_loop(case: Case) -> list[dict]:
    if case.loop is not None:
        return case.loop(case)
    return reference.evaluate(
        case.model, case.units, case.variants, case.final, case.source, case.splits, case.bn_stats
    )


@torch.no_grad()
def run_vmap(case: Case, budget: int) -> list[dict]:
    """Chunks of full composed state dicts, stacked; vmap(functional_call) over them."""
    model = case.model.eval()

    def call(state, x):
        return functional_call(model, state, (x,))

    many = vmap(call, in_dims=(0, None))
    chunk = vmap_chunk(case, budget)
    results = {}
    for split, (x, y) in case.splits.items():
        final = classify(lambda b: call(case.final, b), x, y)["predictions"]
        for lo in range(0, len(case.variants), chunk):
            ids = range(lo, min(lo + chunk, len(case.variants)))
            states = [
                compose.compose(
                    case.variants[i], case.units, case.final, case.source(case.variants[i].source), case.bn_stats
                )
                for i in ids
            ]
            stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
            del states
            k = len(ids)
            wrong = torch.zeros(k, dtype=torch.long, device=x.device)
            agree, worse, better = torch.zeros_like(wrong), torch.zeros_like(wrong), torch.zeros_like(wrong)
            loss = torch.zeros(k, dtype=torch.float64, device=x.device)
            for start in range(0, len(x), BATCH):
                xb = x[start : start + BATCH]
                yb, rb = y[start : start + BATCH].flatten(), final[start : start + BATCH].flatten()  # one per label
                logits = many(stacked, xb).double().flatten(1, -2)  # (K, B, C), or (K, B·T, C) per position
                loss += F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none").view(k, -1).sum(1)
                pred = logits.argmax(dim=2)
                hit, right = pred == yb, rb == yb
                wrong += (~hit).sum(1)
                agree += (pred == rb).sum(1)
                worse += (right & ~hit).sum(1)
                better += (~right & hit).sum(1)
            n = y.numel()
            for i, w, a, s, b, c in zip(ids, *(t.tolist() for t in (wrong, agree, loss, worse, better))):
                results[i, split] = {"error": w / n, "loss": s / n, "agreement": a / n, "worse": b, "better": c, "n": n}
    return [result_row(v, case.bn_stats, s, results[i, s]) for i, v in enumerate(case.variants) for s in case.splits]


def vmap_chunk(case: Case, budget: int) -> int:
    """Variants per vmap chunk: each holds its stacked state and a batch's activations (in + out, twice)."""
    state_bytes = sum(v.numel() * v.element_size() for v in case.final.values())
    _, widest = profile(case)
    return max(1, min(len(case.variants), budget // (state_bytes + 2 * BATCH * widest)))


# ---------------------------------------------------------------------------------------------
# The floor
# ---------------------------------------------------------------------------------------------


def profile(case: Case) -> tuple[list[int], int]:
    """Multiply-adds per input of each unit (Linear, Conv2d), and the widest layer's input + output bytes."""

    def owner(path: str) -> str:
        return next(u.name for u in case.units if path == u.name or path.startswith(u.name + "."))

    macs, widest, hooks = defaultdict(int), 0, []

    def hook(name):
        def record(module, inputs, output):
            nonlocal widest
            output = output[0] if isinstance(output, tuple) else output  # Hugging Face: (out, weights), (cos, sin)
            widest = max(widest, (inputs[0][0].numel() + output[0].numel()) * output.element_size())
            if isinstance(module, nn.Linear):
                macs[owner(name)] += output[0].numel() * module.in_features
            elif attention(module):  # scores q·kᵀ and their mix with v, on (T, width)
                tokens, width = inputs[0][0].shape
                macs[owner(name)] += 2 * tokens * tokens * width
            elif isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs[owner(name)] += output[0].numel() * module.in_channels // module.groups * kh * kw

        return record

    for name, module in case.model.named_modules():
        if name and (attention(module) or not any(True for _ in module.children())):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            x = next(iter(case.splits.values()))[0]
            one = torch.zeros(1, *case.input_shape, dtype=x.dtype, device=x.device)
            functional_call(case.model, case.final, (one,))
    finally:
        for h in hooks:
            h.remove()
    return [macs[u.name] for u in case.units], widest


def attention(module: nn.Module) -> bool:
    """Ours, or a Hugging Face model's (GPTNeoXAttention, LlamaAttention, ...): T×T products inside."""
    return isinstance(module, Attention) or type(module).__name__.endswith("Attention")


def linear_in_weights(model: nn.Module, unit: Unit) -> bool:
    """Whether every layer of the unit with parameters is Linear or Conv (so α-linearity applies)."""
    layers = [m for m in model.get_submodule(unit.name).modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(layers) and all(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in layers)


def minimal_macs(case: Case) -> int:
    """The multiply-adds the case needs at least (see the module docstring: floor)."""
    macs, _ = profile(case)
    index = {u.name: u.index for u in case.units}
    work, grids = sum(macs), defaultdict(int)  # the final model once: every prefix, the reference predictions
    for v in case.variants:
        first = min(index[u] for u in v.units)
        work += sum(macs[first + 1 :])
        grid = v.alpha is not None and not v.sigma and len(v.units) == 1
        if grid and linear_in_weights(case.model, case.units[first]):
            grids[first, v.source] += 1
        else:
            work += macs[first]
    work += sum(min(2, count) * macs[first] for (first, _), count in grids.items())
    return work * sum(len(x) for x, _ in case.splits.values())


def matmul_rate(device: torch.device, repeats: int = 5) -> float:
    """Best float32 multiply-adds per second of a 4096×1024 @ 1024×1024 matmul."""
    a = torch.randn(4096, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    inner = 1 if device.type == "cpu" else 20  # on a GPU one product is too short to time alone
    best = math.inf
    for _ in range(repeats + 1):  # the first is a warm-up
        seconds, _ = timed(lambda: [a @ b for _ in range(inner)], device)
        best = min(best, seconds / inner)
    return 4096 * 1024 * 1024 / best


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def strict_float32() -> None:
    """Plain float32 on CUDA, no TF32 (cuDNN's default for convolutions), for every evaluator and the
    floor's matmul rate alike: with TF32 two correct evaluators disagree on near-tied predictions."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def timed(fn: Callable, device: torch.device):
    """(seconds, result) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def time_evaluator(evaluate: Callable[[Case], list[dict]], case: Case, device: torch.device):
    """(seconds, rows) of one full call, after one warm-up call on case.warmup()."""
    evaluate(case.warmup())
    return timed(lambda: evaluate(case), device)


def report_differences(name: str, rows: list[dict], baseline: list[dict], limit: int = 5) -> None:
    """Print (to stderr) the first rows whose errors differ from the loop's."""
    differ = [(r, b) for r, b in zip(rows, baseline) if r["error"] != b["error"]]
    for r, b in differ[:limit]:
        variant = f"{r['probe']} {r['unit']} checkpoint={r['checkpoint']} alpha={r['alpha']} {r['split']}"
        print(
            f"  case {name}: {variant}: error {r['error']} against the loop's {b['error']} "
            f"(agreement {r['agreement']} / {b['agreement']})",
            file=sys.stderr,
        )
    if len(differ) > limit:
        print(f"  case {name}: ... {len(differ) - limit} more rows differ", file=sys.stderr)


def max_error_diff(rows: list[dict], baseline: list[dict]) -> float:
    """max |error − baseline error|, after checking that both list the same variants in the same order."""
    if len(rows) != len(baseline):
        raise AssertionError(f"{len(rows)} rows against the loop's {len(baseline)}")
    for row, base in zip(rows, baseline):
        ours, theirs = ({k: v for k, v in r.items() if k not in MEASURED} for r in (row, base))
        if ours != theirs:
            raise AssertionError(f"rows out of order or mislabelled: {ours} against the loop's {theirs}")
    return max((abs(r["error"] - b["error"]) for r, b in zip(rows, baseline)), default=0.0)


class PeakMemory:
    """Peak memory above the level at entry, in MB (`.mb` after the with-block).

    CUDA: the caching allocator's max_memory_allocated. CPU: the process's resident set, sampled
    every millisecond by a thread, and the kernel's high-water mark (ru_maxrss) when the block
    raised it. Meant for a fresh process: memory freed before entry is first trimmed back to the OS.
    """

    def __init__(self, device: torch.device):
        self.device, self.mb = device, math.nan

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        _trim()
        self.base, self.high, self.sampled = _rss(), _max_rss(), _rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.001):
            self.sampled = max(self.sampled, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.stop.set()
            self.thread.join()
            high = _max_rss()
            peak = max(self.sampled, _rss(), high if high > self.high else 0)
        self.mb = (peak - self.base) / 2**20


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc: the high-water mark is all there is
        return _max_rss()


def _max_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def engine_in_child(letter: str, sizes: dict, device: torch.device, threads: int, budget: int):
    """(seconds, peak MB, rows) of the engine on a case built in a fresh process."""
    # glibc gives every thread its own heap arena, and each keeps the memory freed into it: with
    # torch's worker threads the resident set of a long run creeps to 2-3x the live tensors. One
    # arena (a standard glibc setting, read when a process starts) makes it track what is allocated.
    saved = os.environ.get(ARENAS)
    os.environ[ARENAS] = "1"
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_child, letter, sizes, str(device), threads, budget).result()
    finally:
        if saved is None:
            os.environ.pop(ARENAS)
        else:
            os.environ[ARENAS] = saved


def _child(letter: str, sizes: dict, device: str, threads: int, budget: int):
    torch.set_num_threads(threads)
    strict_float32()
    device = torch.device(device)
    case = CASES[letter](device=device, **sizes)
    run_engine(case.warmup(), device, budget)
    with PeakMemory(device) as peak:
        seconds, rows = timed(lambda: run_engine(case, device, budget), device)
    return seconds, peak.mb, rows


def measure(
    case: Case,
    device: torch.device,
    budget: int,
    rate: float,
    time_vmap: bool = True,
    engine_result: tuple | None = None,
    ops: bool = False,
) -> dict:
    """One table row. engine_result: (seconds, peak MB, rows) measured elsewhere (case d)."""
    if engine_result is None:
        engine_s, engine_rows = time_evaluator(lambda c: run_engine(c, device, budget), case, device)
        peak_mb = None
    else:
        engine_s, peak_mb, engine_rows = engine_result
    ops_s, ops_rows = (
        time_evaluator(lambda c: run_engine(c, device, budget, True), case, device) if ops else (None, None)
    )
    if ops_rows is not None and max_error_diff(ops_rows, engine_rows) != 0:
        print(
            f"note: case {case.name}: the engine's errors with ops differ from without by up to "
            f"{max_error_diff(ops_rows, engine_rows):.2g}",
            file=sys.stderr,
        )
    loop_s, loop_rows = time_evaluator(run_loop, case, device)
    vmap_s, vmap_rows = time_evaluator(lambda c: run_vmap(c, budget), case, device) if time_vmap else (None, None)
    if vmap_rows is not None and max_error_diff(vmap_rows, loop_rows) != 0:
        print(
            f"note: case {case.name}: vmap's errors differ from the loop's by up to "
            f"{max_error_diff(vmap_rows, loop_rows):.2g} (float rounding of batched GEMMs)",
            file=sys.stderr,
        )
    if max_error_diff(engine_rows, loop_rows) != 0:
        report_differences(case.name, engine_rows, loop_rows)
    ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    # Counted in calls of their own, untimed: the counting modes cost host time per operator.
    counted = case.name not in NO_COUNT
    engine_counts = launches.count(lambda: run_engine(case, device, budget))[0] if counted else None
    loop_counts = launches.count(lambda: run_loop(case))[0] if counted else None
    return {
        "case": case.name,
        "variants": len(case.variants),
        "engine_s": engine_s,
        "ops_s": ops_s,
        "loop_s": loop_s,
        "vmap_s": vmap_s,
        "floor_s": minimal_macs(case) / rate,
        "speedup_vs_loop": ratio(loop_s, engine_s),
        "speedup_vs_vmap": ratio(vmap_s, engine_s),
        "peak_mb": peak_mb,
        "max_error_diff": max_error_diff(engine_rows, loop_rows),
        "engine_launches_per_variant": engine_counts.launches / len(case.variants) if counted else None,
        "loop_launches_per_variant": loop_counts.launches / len(case.variants) if counted else None,
        "engine_syncs": engine_counts.syncs if counted else None,
        "loop_syncs": loop_counts.syncs if counted else None,
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (
        f"cpu: {cpu} ({os.cpu_count()} cores), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"device: {device} ({accelerator})"
    )


def table(results: list[dict]) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [list(FIELDS)] + [[cell(r[f]) for f in FIELDS] for r in results]
    widths = [max(len(row[i]) for row in cells) for i in range(len(FIELDS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def write_json(results: list[dict], path: str | Path) -> None:
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    Path(path).write_text(json.dumps([{f: clean(r[f]) for f in FIELDS} for r in results], indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shrunken sizes (under a minute on 2 CPU cores)")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"], help="auto: cuda when available")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    have_hf = importlib.util.find_spec("transformers") is not None
    parser.add_argument(
        "--cases",
        default=",".join(c for c in CASES if have_hf or c not in NEEDS_TRANSFORMERS),
        help="comma-separated subset of a,b,c,d,e,f (f needs transformers; default: all that can run)",
    )
    parser.add_argument("--budget-mb", type=int, default=2048, help="memory budget of engine and vmap in cases a-c")
    parser.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    parser.add_argument(
        "--ops-library",
        metavar="PATH",
        help="a built layerprobe_ops.so: also time the engine with the fused operators (column ops_s)",
    )
    args = parser.parse_args(argv)
    letters = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in letters if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {','.join(CASES)}")
    torch.set_num_threads(args.threads)
    strict_float32()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    sizes = QUICK if args.quick else FULL
    rate = matmul_rate(device)
    print(machine(device))
    print(
        f"float32 matmul rate: {rate / 1e9:.1f} GMAC/s; loop = layerprobe.probing.reference.evaluate; "
        f"each evaluator timed once after a warm-up call on 2 variants × {BATCH} inputs"
    )
    use_ops = bool(args.ops_library) and lp_ops.resolve("on", args.ops_library, device)
    results = []
    for letter in letters:
        budget = MEMORY_CASES.get(letter, CASE_BUDGETS.get(letter, args.budget_mb * 2**20))
        engine_result = (
            engine_in_child(letter, sizes[letter], device, args.threads, budget) if letter in MEMORY_CASES else None
        )
        case = CASES[letter](device=device, **sizes[letter])
        time_vmap = not (letter in MEMORY_CASES and device.type == "cpu") and letter not in NO_VMAP
        results.append(measure(case, device, budget, rate, time_vmap, engine_result, use_ops))
        print(f"case {letter} done: {results[-1]}", file=sys.stderr, flush=True)
        del case
    print(table(results))
    if args.json:
        write_json(results, args.json)
    bad = [r["case"] for r in results if r["max_error_diff"] != 0]
    if bad:
        print(f"ERROR: the engine's errors differ from the loop's in case(s) {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
