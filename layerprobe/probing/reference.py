"""The reference evaluator: one variant at a time, plain and obviously correct.

It is the oracle the engine is tested and benchmarked against (the loop users write by hand). The
model object only supplies the architecture: each variant's weights are passed to
torch.func.functional_call, so no module's parameters are ever overwritten.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from layerprobe.base.metrics import classify
from layerprobe.data.dataset import Splits
from layerprobe.models.units import State, Unit
from layerprobe.probing.compose import compose
from layerprobe.probing.variants import Variant, row


def evaluate(
    model: nn.Module,
    units: list[Unit],
    variants: list[Variant],
    final: State,
    source: Callable[[tuple[str, int]], State],
    splits: Splits,
    bn_stats: str,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """One row per variant and split: error, loss, agreement with the final model's predictions, n."""
    model = model.eval()

    def forward(state: State) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: functional_call(model, dict(state), (x,), strict=True)

    reference = {s: classify(forward(final), x, y)["predictions"] for s, (x, y) in splits.items()}
    rows = []
    for variant in variants:
        state = compose(variant, units, final, source(variant.source), bn_stats)
        for split, (x, y) in splits.items():
            result = classify(forward(state), x, y, reference=reference[split])
            rows.append(row(variant, bn_stats, split, result))
        if progress:
            progress(1)
    return rows
