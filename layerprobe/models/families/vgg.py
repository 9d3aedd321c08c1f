"""VGG-style nets (paper F3, F6): a conv unit per 3x3 conv (stage{s}.block{b}, a 2x2 max-pool closing each
stage), then the fully connected units fc1, fc2, ..., final_linear."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from layerprobe.models.chain import UnitChain, sequential


def vgg(
    input_shape: Sequence[int],
    num_classes: int,
    stages: Sequence[Sequence[int]] = ((32,), (64, 64)),
    fc: Sequence[int] = (128, 128),
    batch_norm: bool = False,
) -> UnitChain:
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
            units.append((f"stage{s}.block{b}", sequential(**layers)))
            channels = out_channels
    fan_in = channels * height * width
    for i, out_features in enumerate([*fc, num_classes], start=1):
        last = i == len(fc) + 1
        layers = {"flatten": nn.Flatten()} if i == 1 else {}
        layers["linear"] = nn.Linear(fan_in, out_features)
        if not last:
            layers["relu"] = nn.ReLU()
        units.append(("final_linear" if last else f"fc{i}", sequential(**layers)))
        fan_in = out_features
    return UnitChain(units)


# The configurations of Simonyan & Zisserman (A, B, D, E): output channels per stage.
VGG_STAGES = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def vgg_of_depth(depth: int) -> Callable[..., UnitChain]:
    def build(
        input_shape: Sequence[int], num_classes: int, batch_norm: bool = False, fc: Sequence[int] = (512, 512)
    ) -> UnitChain:
        return vgg(input_shape, num_classes, VGG_STAGES[depth], fc, batch_norm)

    build.__doc__ = f"VGG{depth} (for 32x32 inputs: 5 pooled stages, then fc units)."
    return build
