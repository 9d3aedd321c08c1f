"""The reference evaluator: one variant at a time, plain and obviously correct.

It is the oracle every faster path is tested against. The model object only supplies the
architecture: each variant's weights are passed to torch.func.functional_call, so no module's
parameters are ever overwritten.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from layerprobe.datasets import Splits
from layerprobe.metrics import classify
from layerprobe.probes import Variant, compose
from layerprobe.units import Unit


def evaluate(model: nn.Module, units: list[Unit], variants: list[Variant], final: Mapping[str, torch.Tensor],
             source: Callable[[tuple[str, int]], Mapping[str, torch.Tensor]], data: Splits,
             splits: list[str], bn_stats: str, progress: Callable | None = None) -> list[dict]:
    """One row per variant and split: error, loss, agreement with the final model's predictions, n."""
    model = model.eval()

    def forward(state: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: functional_call(model, dict(state), (x,), strict=True)

    reference = {s: classify(forward(final), *data.split(s))["predictions"] for s in splits}
    rows = []
    for variant in (progress or (lambda v: v))(variants):
        state = compose(variant, units, final, source(variant.source), bn_stats)
        for split in splits:
            result = classify(forward(state), *data.split(split), reference=reference[split])
            rows.append({"probe": variant.probe, "unit": variant.label, "checkpoint": variant.checkpoint,
                         "draw": variant.draw, "draw_seed": variant.draw_seed, "bn_stats": bn_stats,
                         "split": split, "error": result["error"], "loss": result["loss"],
                         "agreement": result["agreement"], "n": result["n"]})
    return rows
