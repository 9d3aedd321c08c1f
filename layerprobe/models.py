"""The paper's model families, each built as an ordered chain of named units.

A unit is what a probe resets (paper-notes §1): an FCN's Linear layers (layer1..layerD+1), a VGG's
conv layers (stage{s}.block{b}, a stage ending at a max-pool) and fully connected layers (fc1, fc2,
..., final_linear), a ResNet's stem (stage0), each residual block as a whole (stage{s}.resblk{b})
and final_linear. A unit's name is its module path, so its parameters are exactly the state-dict
entries under that prefix. All layers keep PyTorch's default initializers.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from math import prod
from typing import Callable, Sequence

import torch
from torch import nn


class UnitChain(nn.Module):
    """A network that is the composition of its units, applied in order."""

    def __init__(self, units: Sequence[tuple[str, nn.Module]]):
        super().__init__()
        names = [name for name, _ in units]
        if len(set(names)) != len(names):
            raise ValueError(f"unit names must be unique, got {names}")
        self.unit_names: tuple[str, ...] = tuple(names)
        for name, module in units:
            self._place(name, module)

    def _place(self, path: str, module: nn.Module) -> None:
        # "stage2.block1" lives at self.stage2.block1, so state-dict keys start with the unit name.
        parent: nn.Module = self
        *containers, leaf = path.split(".")
        for part in containers:
            if part not in parent._modules:
                parent.add_module(part, nn.Module())
            parent = parent._modules[part]
        parent.add_module(leaf, module)

    def unit(self, name: str) -> nn.Module:
        if name not in self.unit_names:
            raise KeyError(f"unknown unit {name!r}; units: {', '.join(self.unit_names)}")
        return self.get_submodule(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.unit_names:
            x = self.get_submodule(name)(x)
        return x


def _seq(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def fcn(input_shape: Sequence[int], num_classes: int, depth: int = 3, width: int = 256) -> UnitChain:
    """Fully connected ReLU net with `depth` hidden layers of `width`; units layer1..layer{depth+1}."""
    units, fan_in = [], prod(input_shape)
    for i in range(1, depth + 1):
        layers = {"flatten": nn.Flatten()} if i == 1 else {}
        units.append((f"layer{i}", _seq(**layers, linear=nn.Linear(fan_in, width), relu=nn.ReLU())))
        fan_in = width
    head = {"flatten": nn.Flatten()} if depth == 0 else {}
    units.append((f"layer{depth + 1}", _seq(**head, linear=nn.Linear(fan_in, num_classes))))
    return UnitChain(units)


def vgg(input_shape: Sequence[int], num_classes: int, stages: Sequence[Sequence[int]] = ((32,), (64, 64)),
        fc: Sequence[int] = (128, 128), batch_norm: bool = False) -> UnitChain:
    """VGG-style net: 3x3 conv units per stage, a 2x2 max-pool closing each stage, then FC units."""
    channels, height, width = input_shape
    units = []
    for s, stage in enumerate(stages, start=1):
        for b, out_channels in enumerate(stage, start=1):
            layers = {"conv": nn.Conv2d(channels, out_channels, 3, padding=1)}
            if batch_norm:
                layers["bn"] = nn.BatchNorm2d(out_channels)
            layers["relu"] = nn.ReLU()
            if b == len(stage):
                if height < 2 or width < 2:
                    raise ValueError(f"vgg: {len(stages)} stages pool {input_shape[1:]} inputs below 1x1")
                layers["pool"] = nn.MaxPool2d(2)
                height, width = height // 2, width // 2
            units.append((f"stage{s}.block{b}", _seq(**layers)))
            channels = out_channels
    fan_in = channels * height * width
    for i, out_features in enumerate([*fc, num_classes], start=1):
        last = i == len(fc) + 1
        layers = {"flatten": nn.Flatten()} if i == 1 else {}
        layers["linear"] = nn.Linear(fan_in, out_features)
        if not last:
            layers["relu"] = nn.ReLU()
        units.append(("final_linear" if last else f"fc{i}", _seq(**layers)))
        fan_in = out_features
    return UnitChain(units)


# The configurations of Simonyan & Zisserman (A, B, D, E): output channels per stage.
VGG_STAGES = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _vgg_depth(depth: int) -> Callable[..., UnitChain]:
    def build(input_shape: Sequence[int], num_classes: int, batch_norm: bool = False,
              fc: Sequence[int] = (512, 512)) -> UnitChain:
        return vgg(input_shape, num_classes, VGG_STAGES[depth], fc, batch_norm)
    build.__doc__ = f"VGG{depth} (for 32x32 inputs: 5 pooled stages, then fc units)."
    return build


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut (ResNet-18/34)."""
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = _projection(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 convs with batch norm, 4x expansion, and a shortcut (ResNet-50)."""
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _projection(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _projection(in_channels: int, out: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out:
        return nn.Identity()
    return _seq(conv=nn.Conv2d(in_channels, out, 1, stride, bias=False), bn=nn.BatchNorm2d(out))


RESNET_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}


def resnet(input_shape: Sequence[int], num_classes: int, depth: int = 18, stem: str = "cifar",
           width: int = 64) -> UnitChain:
    """ResNet-18/34/50: units stage0 (the stem), stage{s}.resblk{b} (each block whole), final_linear.

    stem "cifar": one 3x3 conv (32x32 inputs); "imagenet": a 7x7 stride-2 conv and a 3x3 max-pool.
    The first block of stages 2-4 halves the resolution (the down-sampling blocks).
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    block, counts = RESNET_BLOCKS[depth]
    channels = input_shape[0]
    if stem == "cifar":
        stem_layers = _seq(conv=nn.Conv2d(channels, width, 3, 1, 1, bias=False), bn=nn.BatchNorm2d(width), relu=nn.ReLU())
    elif stem == "imagenet":
        stem_layers = _seq(conv=nn.Conv2d(channels, width, 7, 2, 3, bias=False), bn=nn.BatchNorm2d(width),
                           relu=nn.ReLU(), pool=nn.MaxPool2d(3, 2, 1))
    else:
        raise ValueError(f"resnet stem must be 'cifar' or 'imagenet', got {stem!r}")
    units, in_channels = [("stage0", stem_layers)], width
    for s, count in enumerate(counts, start=1):
        planes = width * 2 ** (s - 1)
        for b in range(1, count + 1):
            stride = 2 if s > 1 and b == 1 else 1
            units.append((f"stage{s}.resblk{b}", block(in_channels, planes, stride)))
            in_channels = planes * block.expansion
    units.append(("final_linear", _seq(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                       linear=nn.Linear(in_channels, num_classes))))
    return UnitChain(units)


def _resnet_depth(depth: int) -> Callable[..., UnitChain]:
    def build(input_shape: Sequence[int], num_classes: int, stem: str = "cifar") -> UnitChain:
        return resnet(input_shape, num_classes, depth, stem)
    build.__doc__ = f"ResNet-{depth} with a CIFAR or an ImageNet stem."
    return build


MODELS: dict[str, Callable[..., UnitChain]] = {
    "fcn": fcn, "vgg": vgg,
    **{f"vgg{d}": _vgg_depth(d) for d in VGG_STAGES},
    **{f"resnet{d}": _resnet_depth(d) for d in RESNET_BLOCKS},
}


def build(spec: dict, input_shape: Sequence[int], num_classes: int) -> UnitChain:
    """Build from a config entry such as {"name": "fcn", "depth": 3, "width": 256}."""
    options = dict(spec)
    name = options.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](input_shape, num_classes, **options)


def fresh_state(factory: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a new model drawn with the model's own initializers under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().state_dict()


def describe(spec: dict) -> str:
    """A short label for tables and titles, e.g. 'fcn(depth=3,width=256)'."""
    options = ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({options})"
