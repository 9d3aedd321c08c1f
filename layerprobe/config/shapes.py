"""What a model setting will be, read without building it: its units in order, each with its multiply-adds,
and what in it cannot be built on the dataset's inputs (a Transformer's heads, patch or context).

The workflow plans with these before any torch runs (probe shards sized by their cost; unit names
checked against the config). They are computed from the settings alone, for the built-in model
families (layerprobe.models builds the same networks; tests/test_models.py checks that the names
equal the built model's units and the multiply-adds equal those counted on it). A family without an
entry here is planned without shapes: one shard per probe kind, unit names unchecked until probing.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from layerprobe.config.released import classes


@dataclass(frozen=True)
class UnitShape:
    name: str
    index: int
    macs: int  # multiply-adds of one example through the unit (its linear and conv layers)


# Same stages as layerprobe.models.vgg.VGG_STAGES (configurations A, B, D, E; a test keeps them equal).
VGG_STAGES = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}
RESNET_BLOCKS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


def units(spec: dict, input_shape: tuple[int, ...], num_classes: int) -> list[UnitShape] | None:
    """The units of the model `spec` (a config's `model`, defaults filled) on inputs of `input_shape`;
    None for a family this module does not know."""
    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name == "fcn":
        found = _fcn(input_shape, num_classes, **options)
    elif name == "vgg":
        found = _vgg(input_shape, num_classes, **options)
    elif name.startswith("vgg") and name[3:].isdigit() and int(name[3:]) in VGG_STAGES:
        found = _vgg(input_shape, num_classes, VGG_STAGES[int(name[3:])], options.get("fc", [512, 512]))
    elif name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in RESNET_BLOCKS:
        found = _resnet(input_shape, num_classes, int(name[6:]), options.get("stem", "cifar"))
    elif name == "transformer_lm":
        found = _transformer_lm(input_shape, num_classes, **options)
    elif name == "vit":
        found = _vit(input_shape, num_classes, **options)
    else:
        return None
    return [UnitShape(unit, i, int(macs)) for i, (unit, macs) in enumerate(found)]


def problems(spec: dict, input_shape: tuple[int, ...], where: str, data: str) -> list[str]:
    """What a model setting cannot be built with on inputs of `input_shape` (from dataset `data`),
    each message naming the key under `where`; checked before any training."""
    name = spec["name"]
    if name not in ("transformer_lm", "vit"):
        return []
    messages = []
    width, heads = spec.get("width", 64), spec.get("heads", 2)
    if width % heads:
        messages.append(f"{where}.heads: {heads} heads do not divide width {width}")
    if name == "transformer_lm":
        if len(input_shape) != 1:
            messages.append(f"{where}.name: transformer_lm reads token sequences; dataset {data!r} holds images")
        elif spec.get("context") is not None and input_shape[0] > spec["context"]:
            messages.append(
                f"{where}.context: the model's context of {spec['context']} tokens is shorter than the "
                f"sequences of dataset {data!r} ({input_shape[0]} tokens: datasets.{data}.sequence_length)"
            )
    elif len(input_shape) != 3:
        messages.append(f"{where}.name: vit reads images; dataset {data!r} holds token sequences")
    else:
        _, height, side = input_shape
        patch = spec.get("patch", 4)
        if height != side or height % patch:
            messages.append(f"{where}.patch: {patch} does not divide the {height}×{side} images of dataset {data!r}")
    return messages


def _fcn(input_shape, num_classes, depth=3, width=256):
    fan_in, out = prod(input_shape), []
    for i in range(1, depth + 1):
        out.append((f"layer{i}", fan_in * width))
        fan_in = width
    return out + [(f"layer{depth + 1}", fan_in * num_classes)]


def _conv(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _vgg(input_shape, num_classes, stages=((32,), (64, 64)), fc=(128, 128), batch_norm=False):
    channels, height, width = input_shape
    out = []
    for s, stage in enumerate(stages, start=1):
        for b, out_channels in enumerate(stage, start=1):
            out.append((f"stage{s}.block{b}", channels * out_channels * 9 * height * width))
            channels = out_channels
        height, width = height // 2, width // 2
    fan_in = channels * height * width
    for i, features in enumerate([*fc, num_classes], start=1):
        out.append(("final_linear" if i == len(fc) + 1 else f"fc{i}", fan_in * features))
        fan_in = features
    return out


def _resnet(input_shape, num_classes, depth, stem, width=64):
    channels, size, _ = input_shape
    if stem == "cifar":
        out = [("stage0", channels * width * 9 * size * size)]
    else:  # 7x7 stride-2 conv, then a 3x3 stride-2 max-pool
        size = _conv(size, 7, 2, 3)
        out = [("stage0", channels * width * 49 * size * size)]
        size = _conv(size, 3, 2, 1)
    kind, counts = RESNET_BLOCKS[depth]
    expansion = 1 if kind == "basic" else 4
    in_channels = width
    for s, count in enumerate(counts, start=1):
        planes = width * 2 ** (s - 1)
        for b in range(1, count + 1):
            stride = 2 if s > 1 and b == 1 else 1
            after = _conv(size, 3, stride, 1)
            out_channels = planes * expansion
            if kind == "basic":
                macs = (in_channels * planes * 9 + planes * out_channels * 9) * after * after
            else:
                squeeze = in_channels * planes * size * size  # the 1x1 conv, before any stride
                macs = squeeze + (planes * planes * 9 + planes * out_channels) * after * after
            if stride != 1 or in_channels != out_channels:  # the 1x1 projection shortcut
                macs += in_channels * out_channels * after * after
            out.append((f"stage{s}.resblk{b}", macs))
            in_channels, size = out_channels, after
    return out + [("final_linear", in_channels * num_classes)]


def _block(tokens: int, width: int, mlp_ratio: int) -> tuple[int, int]:
    """Multiply-adds of one residual block's attention (projections and the two T×T products) and MLP."""
    attention = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width
    return attention, 2 * tokens * width * mlp_ratio * width


def _blocks(tokens, layers, width, mlp_ratio, units):
    attention, mlp = _block(tokens, width, mlp_ratio)
    if units == "sublayers":
        return [(f"block{i}.{part}", macs) for i in range(layers) for part, macs in (("attn", attention), ("mlp", mlp))]
    return [(f"block{i}", attention + mlp) for i in range(layers)]


def _transformer_lm(input_shape, num_classes, layers=2, width=64, heads=2, mlp_ratio=4, units="blocks", context=None):
    (tokens,) = input_shape
    return [("embed", 0), *_blocks(tokens, layers, width, mlp_ratio, units), ("head", tokens * width * num_classes)]


def _vit(input_shape, num_classes, patch=4, layers=2, width=64, heads=2, mlp_ratio=4, units="blocks"):
    channels, height, side = input_shape
    patches = (height // patch) * (side // patch)
    embed = patches * channels * patch * patch * width
    return [("embed", embed), *_blocks(patches + 1, layers, width, mlp_ratio, units), ("head", width * num_classes)]


def released(hf_config: dict, units: str, input_shape: tuple[int, ...]) -> list[UnitShape]:
    """The units of a released checkpoint, from its config.json (as layerprobe.models.pretrained builds
    them: embed, layer{i} or layer{i}.attn / .mlp, final_norm, head), with their multiply-adds."""
    get = hf_config.get
    layers = get("num_hidden_layers", get("n_layer"))
    width = get("hidden_size", get("n_embd"))
    hidden = get("intermediate_size") or get("n_inner") or 4 * width
    heads = get("num_attention_heads", get("n_head"))
    kv_width = width * get("num_key_value_heads", heads) // heads  # grouped-query attention shares K and V
    gated = get("model_type") in ("llama", "olmo", "olmo2", "mistral", "qwen2")  # gate, up and down projections
    if get("model_type") == "vit":
        channels, height, side = input_shape
        tokens = (height // get("patch_size")) * (side // get("patch_size")) + 1
        embed = (tokens - 1) * channels * get("patch_size") ** 2 * width
        head = width * classes(hf_config)
    else:
        (tokens,) = input_shape
        embed, head = 0, tokens * width * classes(hf_config)
    attention = tokens * (2 * width * width + 2 * width * kv_width) + tokens * tokens * width  # projections, QKᵀ and AV
    mlp = tokens * (3 if gated else 2) * width * hidden
    if units == "sublayers":
        blocks = [
            (f"layer{i}.{part}", macs) for i in range(layers) for part, macs in (("attn", attention), ("mlp", mlp))
        ]
    else:
        blocks = [(f"layer{i}", attention + mlp) for i in range(layers)]
    norm = [] if get("model_type") == "olmo" else [("final_norm", 0)]  # OLMo's LayerNorm has no parameters
    found = [("embed", embed), *blocks, *norm, ("head", head)]
    return [UnitShape(unit, i, int(macs)) for i, (unit, macs) in enumerate(found)]
