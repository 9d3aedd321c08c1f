"""The fused operators' references: unfused, obviously correct, what the tests compare the kernels with.

Same signatures and results as torch.ops.layerprobe.* (layerprobe.probing.ops), computed the plain
way: all logits at once, one product per α, every noise matrix materialized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerprobe.probing.noise import normal_noise


def head_eval_reference(hidden, weight, bias, labels, reference):
    """Logits of all V × N rows at once, then argmax, cross-entropy (float64) and the counts: correct,
    loss, agreement with `reference`, and worse (the reference right, the variant wrong)."""
    classes = weight.shape[0]
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < classes):
        raise ValueError(
            f"head_eval: labels must lie in [0, {classes}) for a head of {classes} classes, "
            f"got labels from {int(labels.min())} to {int(labels.max())}"
        )
    logits = F.linear(hidden, weight, bias)  # (V, N, C)
    v, n = logits.shape[:2]
    pred = logits.argmax(dim=2)
    loss = (
        F.cross_entropy(logits.reshape(v * n, classes).double(), labels.repeat(v), reduction="none").view(v, n).sum(1)
    )
    hit = pred == labels
    return hit.sum(1), loss, (pred == reference).sum(1), (~hit & (reference == labels)).sum(1)


def interp_unit_reference(x, weight0, bias0, weight1, bias1, alphas, activation="none"):
    """Each α's interpolated layer applied on its own: K products."""
    if activation not in ("none", "relu"):
        raise ValueError(f"interp_unit: activation must be 'none' or 'relu', got {activation!r}")
    outs = []
    for a in alphas.tolist():
        w = (1 - a) * weight0 + a * weight1
        b = None if bias0 is None else (1 - a) * bias0 + a * bias1
        z = F.linear(x, w, b)
        outs.append(torch.relu(z) if activation == "relu" else z)
    return torch.stack(outs) if outs else x.new_empty(0, x.shape[0], weight0.shape[0])


def noisy_unit_reference(x, weight, bias, sigmas, seeds, stream=0):
    """Every E_k materialized, then one batched product."""
    rows, cols = weight.shape
    noise = (
        torch.stack([normal_noise(int(s) % 2**64, stream, rows, cols, weight.dtype) for s in seeds.tolist()])
        if len(seeds)
        else weight.new_empty(0, rows, cols)
    )
    perturbed = weight + sigmas.to(weight.dtype).view(-1, 1, 1) * noise.to(weight.device)
    out = torch.matmul(x, perturbed.transpose(1, 2))
    return out if bias is None else out + bias
