"""Classification error, loss, agreement and discordant counts of one forward function on one split.

A label per example (N,) is scored against logits (N, C); labels per position (N, T), as a sequence
model's next tokens, against logits (N, T, C): every position is one prediction, so `n` counts tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


@torch.no_grad()
def classify(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    reference: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> dict:
    """Error (0-1), mean cross-entropy, agreement with `reference` predictions, the discordant counts
    against them (`worse`: reference right, prediction wrong; `better`: the reverse), and the predictions.
    Without a reference, agreement is NaN and the counts are None."""
    predictions, loss_sum = [], 0.0
    for start in range(0, len(x), batch_size):
        logits = forward(x[start : start + batch_size]).double()
        loss_sum += cross_entropy(logits, y[start : start + batch_size], reduction="sum").item()
        predictions.append(logits.argmax(dim=-1))
    pred = torch.cat(predictions)
    n = y.numel()
    paired = reference is not None
    return {
        "error": (pred != y).sum().item() / n,
        "loss": loss_sum / n,
        "agreement": (pred == reference).sum().item() / n if paired else float("nan"),
        "worse": ((reference == y) & (pred != y)).sum().item() if paired else None,
        "better": ((reference != y) & (pred == y)).sum().item() if paired else None,
        "n": n,
        "predictions": pred,
    }


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (N, ..., C) against labels (N, ...): one term per label."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction=reduction)
