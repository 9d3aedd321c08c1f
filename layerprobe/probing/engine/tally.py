"""What is kept of the logits: per variant and split, correct predictions, summed loss, agreement, n."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Tally:
    correct: int = 0
    agree: int = 0
    loss: float = 0.0
    n: int = 0

    def result(self) -> dict:
        return {
            "error": (self.n - self.correct) / self.n,
            "loss": self.loss / self.n,
            "agreement": self.agree / self.n,
            "n": self.n,
        }


def tally(logits: torch.Tensor, y: torch.Tensor, ids: list[int], split: str, tallies: dict) -> torch.Tensor:
    """Reduce (K, B, C) logits to per-variant counts, the loss in float64 as the reference does;
    returns the predictions (K, B) for the agreement, counted once the final model's are known."""
    k, b = logits.shape[:2]
    flat = logits.reshape(k * b, -1)
    pred = flat.argmax(dim=1).view(k, b)
    loss = F.cross_entropy(flat.double(), y.repeat(k), reduction="none").view(k, b).sum(dim=1)
    correct = (pred == y).sum(dim=1).tolist()
    for i, c, summed in zip(ids, correct, loss.tolist()):
        t = tallies[i, split]
        t.correct, t.loss, t.n = t.correct + c, t.loss + summed, t.n + b
    return pred


def agree(pred: torch.Tensor, reference: torch.Tensor, ids: list[int], split: str, tallies: dict) -> None:
    for i, a in zip(ids, (pred == reference).sum(dim=1).tolist()):
        tallies[i, split].agree += a


def count(
    correct: torch.Tensor, loss: torch.Tensor, agree: torch.Tensor, ids: list[int], b: int, split: str, tallies: dict
) -> None:
    for i, c, summed, a in zip(ids, correct.tolist(), loss.tolist(), agree.tolist()):
        t = tallies[i, split]
        t.correct, t.loss, t.agree, t.n = t.correct + c, t.loss + summed, t.agree + a, t.n + b
