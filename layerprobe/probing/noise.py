"""Criticality noise: layerprobe's one definition, Philox4x32-10 with Box-Muller.

Bit for bit the generator of csrc/philox.h, which the fused operators run inside their kernels, so
the reference evaluator, the engine with or without the operators, and CPU and GPU runs all perturb
with the same numbers.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF
_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox4x32_10(c0, c1, c2, c3, k0, k1) -> tuple[torch.Tensor, ...]:
    """Philox4x32 with 10 rounds; counter words and key words are int64 tensors (or ints) holding
    uint32 values, broadcast together. int64 products wrap modulo 2**64, which keeps the low 64 bits
    of the 32×32-bit product exact: hi and lo are read from them with shifts and masks."""
    c0, c1, c2, c3, k0, k1 = (torch.as_tensor(v, dtype=torch.int64) for v in (c0, c1, c2, c3, k0, k1))
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        p0, p1 = c0 * _M0, c2 * _M1
        hi0, lo0, hi1, lo1 = (p0 >> 32) & _MASK, p0 & _MASK, (p1 >> 32) & _MASK, p1 & _MASK
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def normal_noise(seed: int, stream: int, rows: int, cols: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(rows, cols) standard normals: entry (r, c) from Philox keyed by (seed, stream, r, c).

    Key = (seed mod 2**32, seed >> 32); counter = (c // 2, r, stream, 0); the first two words give
    the normals of columns c // 2 · 2 (cos) and + 1 (sin) by Box-Muller, computed in float64.
    """
    if not 0 <= seed < 2**64 or not 0 <= stream < 2**32:
        raise ValueError(f"normal_noise: seed must lie in [0, 2**64) and stream in [0, 2**32), got {seed}, {stream}")
    pairs = (cols + 1) // 2
    seed = seed - 2**64 if seed >= 2**63 else seed  # as int64, the bits the C++ reads
    v0, v1, _, _ = philox4x32_10(
        torch.arange(pairs).view(1, -1), torch.arange(rows).view(-1, 1), stream, 0, seed & _MASK, (seed >> 32) & _MASK
    )
    u1 = (v0.double() + 1.0) * 2.0**-32  # (0, 1]: the log stays finite
    u2 = v1.double() * 2.0**-32
    radius, angle = torch.sqrt(-2.0 * torch.log(u1)), (2 * math.pi) * u2
    pair = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=2)  # (rows, pairs, 2)
    return pair.view(rows, 2 * pairs)[:, :cols].to(dtype).contiguous()


def seeds_for(seed: int, k: int) -> torch.Tensor:
    """The per-draw keys of `noisy_unit` for one seed and K draws: (seed, k) as the key's two words."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    return seed + (torch.arange(k, dtype=torch.int64) << 32)
