"""ResNet-18/34/50 (paper F4, F7): the stem (stage0), each residual block as a whole (stage{s}.resblk{b}),
final_linear."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from layerprobe.models.chain import UnitChain, sequential


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
    return sequential(conv=nn.Conv2d(in_channels, out, 1, stride, bias=False), bn=nn.BatchNorm2d(out))


RESNET_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}


def resnet(
    input_shape: Sequence[int], num_classes: int, depth: int = 18, stem: str = "cifar", width: int = 64
) -> UnitChain:
    """ResNet-18/34/50: units stage0 (the stem), stage{s}.resblk{b} (each block whole), final_linear.

    stem "cifar": one 3x3 conv (32x32 inputs); "imagenet": a 7x7 stride-2 conv and a 3x3 max-pool.
    The first block of stages 2-4 halves the resolution (the down-sampling blocks).
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    block, counts = RESNET_BLOCKS[depth]
    channels = input_shape[0]
    if stem == "cifar":
        stem_layers = sequential(
            conv=nn.Conv2d(channels, width, 3, 1, 1, bias=False), bn=nn.BatchNorm2d(width), relu=nn.ReLU()
        )
    elif stem == "imagenet":
        stem_layers = sequential(
            conv=nn.Conv2d(channels, width, 7, 2, 3, bias=False),
            bn=nn.BatchNorm2d(width),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(3, 2, 1),
        )
    else:
        raise ValueError(f"resnet stem must be 'cifar' or 'imagenet', got {stem!r}")
    units, in_channels = [("stage0", stem_layers)], width
    for s, count in enumerate(counts, start=1):
        planes = width * 2 ** (s - 1)
        for b in range(1, count + 1):
            stride = 2 if s > 1 and b == 1 else 1
            units.append((f"stage{s}.resblk{b}", block(in_channels, planes, stride)))
            in_channels = planes * block.expansion
    units.append(
        (
            "final_linear",
            sequential(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), linear=nn.Linear(in_channels, num_classes)),
        )
    )
    return UnitChain(units)


def resnet_of_depth(depth: int) -> Callable[..., UnitChain]:
    def build(input_shape: Sequence[int], num_classes: int, stem: str = "cifar") -> UnitChain:
        return resnet(input_shape, num_classes, depth, stem)

    build.__doc__ = f"ResNet-{depth} with a CIFAR or an ImageNet stem."
    return build
