"""What is kept of the logits: per variant and split, correct predictions, summed loss, agreement,
the discordant pairs against the final model, n.

The paired comparison with the unmodified final model needs two counts beyond `correct`: `worse`
(inputs the final model gets right and the variant wrong) and `better` (the reverse). One is counted,
per variant; the other follows from the final model's own correct count r on the split (one number
per split), since worse − better = r − correct.

The counts stay on the device and are read once, after the last batch: nothing on the per-batch
path waits for the device. A batch's logits are gathered into one (V, B, C) block (`Logits`) and
reduced in one pass once the final model's predictions are known (on the chain path they are the
walk's own end).
"""

from __future__ import annotations

import torch

from layerprobe.data.dataset import Splits


class Tallies:
    def __init__(self, variants: int, splits: Splits, device: torch.device):
        self.splits = {s: i for i, s in enumerate(splits)}
        self.n = {s: y.numel() for s, (_, y) in splits.items()}  # every variant sees every input (or token)
        # Per split: correct, agree, worse of every variant (one tensor, so one read), and the final
        # model's own correct count in the last column.
        self.counts = torch.zeros((len(splits), 3, variants + 1), dtype=torch.int64, device=device)
        self.loss = torch.zeros((len(splits), variants), dtype=torch.float64, device=device)

    def add(self, split: str, ids: torch.Tensor, correct, loss, agree, worse) -> None:
        """Per-variant counts of the variants `ids` (a device tensor of their indices)."""
        s = self.splits[split]
        self.counts[s].index_add_(1, ids, torch.stack([correct, agree, worse]))
        self.loss[s].index_add_(0, ids, loss)

    def add_final(self, split: str, correct: torch.Tensor) -> None:
        """The final model's correct predictions on one batch (a 0-d device tensor)."""
        self.counts[self.splits[split], 0, -1].add_(correct)

    def results(self) -> dict[tuple[int, str], dict]:
        """{(variant, split): error, loss, agreement, worse, better, n} — the two reads of the device."""
        counts, loss = self.counts.tolist(), self.loss.tolist()
        out = {}
        for split, s in self.splits.items():
            n = self.n[split]
            (correct, agree, worse), final = counts[s], counts[s][0][-1]
            for i in range(len(loss[s])):
                out[i, split] = {
                    "error": (n - correct[i]) / n,
                    "loss": loss[s][i] / n,
                    "agreement": agree[i] / n,
                    "worse": worse[i],
                    "better": worse[i] - final + correct[i],
                    "n": n,
                }
        return out


class Logits:
    """One batch's logits of many variants, written slice by slice into one (V, B, C) block, or
    (V, B, T, C) for labels per position (a sequence model's next tokens).

    `chunks` are those whose logits are put, in the order the walk meets them (each chunk's rows
    consecutive); `ids` holds each chunk's variant indices on the device (Plan.ids), so the block's
    are joined there, with no copy from the host per batch."""

    def __init__(self, chunks: list[list[int]], ids: dict[tuple[int, ...], torch.Tensor], batch: int):
        order = [i for c in chunks for i in c]
        self.row = {i: r for r, i in enumerate(order)}
        self.ids = torch.cat([ids[tuple(c)] for c in chunks]) if chunks else None
        self.batch, self.block = batch, None

    def put(self, chunk: list[int], start: int, logits: torch.Tensor) -> None:
        """The (K, b, ..., C) logits of the chunk's variants on inputs start…start+b."""
        if self.block is None:  # float64, as the reference reduces them: converted by this one copy
            self.block = logits.new_empty((len(self.row), self.batch, *logits.shape[2:]), dtype=torch.float64)
        first = self.row[chunk[0]]
        self.block[first : first + len(chunk), start : start + logits.shape[1]].copy_(logits)

    def reduce(self, y: torch.Tensor, reference: torch.Tensor, split: str, tallies: Tallies) -> None:
        """Counts, the loss in float64 as the reference computes it; the final model's own correct
        count is tallied once per batch here, whether or not any logits were put."""
        y, reference = y.flatten(), reference.flatten()  # one prediction per label
        right = reference == y
        tallies.add_final(split, right.sum())
        if self.block is None:
            return
        block = self.block.flatten(1, -2)
        k, b = block.shape[:2]
        pred = block.argmax(dim=2)
        hit = pred == y
        logp = torch.log_softmax(block, dim=2)
        nll = logp.gather(2, y.view(1, b, 1).expand(k, b, 1)).squeeze(2).sum(dim=1).neg_()
        worse = (right > hit).sum(dim=1)  # right before, wrong after
        tallies.add(split, self.ids, hit.sum(dim=1), nll, (pred == reference).sum(dim=1), worse)
