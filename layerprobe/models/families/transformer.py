"""Pre-LayerNorm Transformers as unit chains: a decoder-only language model and a Vision Transformer.

Units, in order: `embed` (token or patch embedding with positions, and the ViT's class token),
`block0` … `block{L-1}` (each whole residual block: attention and MLP with their norms) and `head`
(final norm and output projection). With `units="sublayers"` each block is two units,
`block{i}.attn` and `block{i}.mlp`, as the LLM layer-dropping literature counts them. The state-dict
keys are the same either way (block0.attn.norm.weight, ...), so a checkpoint serves both.

The output projection is not tied to the token embedding: a probe resets one unit's parameters, and
a tied matrix would belong to two units at once (resetting `embed` would silently reset `head`).

Initializers are GPT-2's (Radford et al. 2019; also nanoGPT's and the ViT reference's): Linear and
Embedding weights N(0, 0.02²), the residual output projections N(0, (0.02/√(2L))²), biases 0,
LayerNorm 1 and 0, positions and class token N(0, 0.02²). They run in the constructor, drawn from
the global generator, so `fresh_state` re-randomizes a unit exactly as the model was first drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from layerprobe.models.chain import UnitChain

STD = 0.02


class Attention(nn.Module):
    """Multi-head self-attention (one fused QKV projection), causal or not. The products and the
    softmax are torch's fused scaled_dot_product_attention: the T×T scores never reach memory."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, w = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        # causal: position i attends to positions ≤ i only
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(mixed.transpose(1, 2).reshape(n, t, w))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.up(x)))


class Residual(nn.Module):
    """x + f(norm(x)): one pre-LayerNorm sublayer."""

    def __init__(self, width: int, inner: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(self.norm(x))


class Block(nn.Sequential):
    """One residual block: attention, then MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, causal: bool):
        super().__init__()
        self.add_module("attn", Residual(width, Attention(width, heads, causal)))
        self.add_module("mlp", Residual(width, MLP(width, mlp_ratio * width)))


class TokenEmbedding(nn.Module):
    """Token plus learned position embeddings; refuses sequences longer than the context."""

    def __init__(self, vocabulary: int, width: int, context: int):
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Parameter(torch.zeros(context, width))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] > len(self.positions):
            raise ValueError(
                f"a sequence of {ids.shape[-1]} tokens is longer than the model's context {len(self.positions)}"
            )
        return self.tokens(ids) + self.positions[: ids.shape[-1]]


class PatchEmbedding(nn.Module):
    """Non-overlapping patches projected to the width, a class token in front, learned positions."""

    def __init__(self, channels: int, image: int, patch: int, width: int):
        super().__init__()
        self.project = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = nn.Parameter(torch.zeros((image // patch) ** 2 + 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.project(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), patches], dim=1) + self.positions


class LMHead(nn.Sequential):
    def __init__(self, width: int, vocabulary: int):
        super().__init__()
        self.add_module("norm", nn.LayerNorm(width))
        self.add_module("out", nn.Linear(width, vocabulary))


class ClassHead(nn.Module):
    """Final norm and classifier on the class token."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x[:, 0]))


def transformer_lm(
    input_shape: Sequence[int],
    num_classes: int,
    layers: int = 2,
    width: int = 64,
    heads: int = 2,
    mlp_ratio: int = 4,
    units: str = "blocks",
    context: int | None = None,
) -> UnitChain:
    """A decoder-only LM over `num_classes` tokens (the vocabulary) on sequences of `input_shape[0]`
    tokens, with `context` positions (None: exactly those)."""
    _check(width, heads, units)
    (length,) = input_shape
    context = length if context is None else context
    if length > context:
        raise ValueError(f"sequences of {length} tokens are longer than the model's context of {context}")
    blocks = [Block(width, heads, mlp_ratio, causal=True) for _ in range(layers)]
    model = _chain(TokenEmbedding(num_classes, width, context), blocks, LMHead(width, num_classes), units)
    _initialize(model, layers)
    return model


def vit(
    input_shape: Sequence[int],
    num_classes: int,
    patch: int = 4,
    layers: int = 2,
    width: int = 64,
    heads: int = 2,
    mlp_ratio: int = 4,
    units: str = "blocks",
) -> UnitChain:
    """A Vision Transformer on square (C, H, H) images cut into patch × patch patches."""
    _check(width, heads, units)
    channels, height, side = input_shape
    if height != side or height % patch:
        raise ValueError(f"patch {patch} must divide the image's side; the images are {height}×{side}")
    blocks = [Block(width, heads, mlp_ratio, causal=False) for _ in range(layers)]
    embed = PatchEmbedding(channels, height, patch, width)
    model = _chain(embed, blocks, ClassHead(width, num_classes), units)
    _initialize(model, layers)
    return model


def _check(width: int, heads: int, units: str) -> None:
    if heads < 1 or width % heads:
        raise ValueError(f"heads {heads} must divide width {width}")
    if units not in ("blocks", "sublayers"):
        raise ValueError(f"units {units!r}: one of 'blocks', 'sublayers'")


def _chain(embed: nn.Module, blocks: list[Block], head: nn.Module, units: str) -> UnitChain:
    if units == "blocks":
        middle = [(f"block{i}", block) for i, block in enumerate(blocks)]
    else:
        middle = [
            (f"block{i}.{part}", getattr(block, part)) for i, block in enumerate(blocks) for part in ("attn", "mlp")
        ]
    return UnitChain([("embed", embed), *middle, ("head", head)])


def _initialize(model: nn.Module, layers: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            residual_out = name.endswith(("attn.inner.out", "mlp.inner.out"))
            nn.init.normal_(module.weight, std=STD / math.sqrt(2 * layers) if residual_out else STD)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for name, parameter in model.named_parameters():
        if name.endswith(("positions", "cls")):
            nn.init.normal_(parameter, std=STD)
