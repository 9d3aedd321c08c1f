"""The paper's model families, each built as an ordered chain of named units (layerprobe.models.chain).

A unit is what a probe resets (paper-notes §1): an FCN's Linear layers (layer1..layerD+1), a VGG's
conv layers (stage{s}.block{b}, a stage ending at a max-pool) and fully connected layers (fc1, fc2,
..., final_linear), a ResNet's stem (stage0), each residual block as a whole (stage{s}.resblk{b})
and final_linear; a Transformer's embeddings (embed), each residual block (block{i}, or its
attention and MLP with `units: sublayers`) and head. The paper's nets keep PyTorch's default
initializers, the Transformers GPT-2's (families/transformer.py). `units` finds the units of any
other model by a rule.

This module is the registry of model families (`MODELS`): a new family is a module of its own and
one entry here (plus its options in the config schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from torch import nn

from layerprobe.models.chain import UnitChain
from layerprobe.models.families.fcn import fcn
from layerprobe.models.families.resnet import RESNET_BLOCKS, resnet_of_depth
from layerprobe.models.families.transformer import transformer_lm, vit
from layerprobe.models.families.vgg import VGG_STAGES, vgg, vgg_of_depth

__all__ = ["MODELS", "UnitChain", "build", "describe", "factory", "fcn", "fresh_state", "vgg"]


# The model families a config names (`model.name`); the schema's enum lists the same names (a test).
MODELS: dict[str, Callable[..., UnitChain]] = {
    "fcn": fcn,
    "vgg": vgg,
    **{f"vgg{d}": vgg_of_depth(d) for d in VGG_STAGES},
    **{f"resnet{d}": resnet_of_depth(d) for d in RESNET_BLOCKS},
    "transformer_lm": transformer_lm,
    "vit": vit,
}


def build(spec: dict, input_shape: Sequence[int], num_classes: int) -> UnitChain:
    """Build from a config entry such as {"name": "fcn", "depth": 3, "width": 256}."""
    options = dict(spec)
    name = options.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](input_shape, num_classes, **options)


def factory(spec: dict, input_shape: Sequence[int], num_classes: int) -> Callable[[], nn.Module]:
    """A function building the model of `spec` anew (its weights drawn from the global generator)."""
    return lambda: build(spec, input_shape, num_classes)


def fresh_state(factory: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a new model drawn with the model's own initializers under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().state_dict()


def describe(spec: dict) -> str:
    """A short label for tables and titles, e.g. 'fcn(depth=3,width=256)'."""
    options = ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({options})"
