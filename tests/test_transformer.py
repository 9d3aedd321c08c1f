"""The Transformer families: units, attention against torch's own, causal masking, bad settings."""

import json
import math

import pytest
import torch
from torch.nn import functional as F

from layerprobe.models import fresh_state
from layerprobe.models.families.transformer import Attention, transformer_lm, vit


@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons against the reference; the default dtype restored for the other tests."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def lm(**options):
    return transformer_lm((16,), 50, **{"layers": 3, "width": 24, "heads": 3, **options})


def test_units_in_order_own_every_parameter_once():
    for model, middle in [
        (lm(), ["block0", "block1", "block2"]),
        (lm(units="sublayers"), [f"block{i}.{p}" for i in range(3) for p in ("attn", "mlp")]),
        (vit((3, 8, 8), 10, patch=4, layers=3, width=24, heads=3), ["block0", "block1", "block2"]),
    ]:
        assert model.unit_names == ("embed", *middle, "head")
        owners = {k: [u for u in model.unit_names if k.startswith(u + ".")] for k in model.state_dict()}
        assert all(len(units) == 1 for units in owners.values()), owners


def test_blocks_and_sublayers_share_state_keys_and_outputs():
    blocks, sublayers = lm(), lm(units="sublayers")
    assert list(blocks.state_dict()) == list(sublayers.state_dict())
    sublayers.load_state_dict(blocks.state_dict())
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(blocks(ids), sublayers(ids))


@pytest.mark.parametrize("causal", [True, False])
def test_attention_equals_torchs_scaled_dot_product_attention(causal):
    torch.manual_seed(0)
    attention = Attention(24, 4, causal)
    x = torch.randn(3, 7, 24)
    q, k, v = attention.qkv(x).view(3, 7, 3, 4, 6).permute(2, 0, 3, 1, 4)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(3, 7, 24)
    torch.testing.assert_close(attention(x), attention.out(reference), rtol=1e-12, atol=1e-12)


def test_the_language_model_is_causal():
    model = lm()
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    before, after = model(ids), model(changed)
    assert before.shape == (2, 16, 50)
    assert torch.equal(before[:, :10], after[:, :10]) and not torch.equal(before[:, 10:], after[:, 10:])


def test_the_vit_classifies_images():
    model = vit((1, 8, 8), 10, patch=2, layers=1, width=8, heads=2)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert model.embed.positions.shape == (17, 8)  # 16 patches and the class token


def test_fresh_state_redraws_the_model_exactly_with_its_own_initializers():
    first, again = fresh_state(lm, 7), fresh_state(lm, 7)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["block0.attn.inner.qkv.weight"], fresh_state(lm, 8)["block0.attn.inner.qkv.weight"])
    model = transformer_lm((16,), 50, layers=8, width=256, heads=4)
    assert abs(float(model.block0.attn.inner.qkv.weight.detach().std()) - 0.02) < 0.001
    assert abs(float(model.block0.mlp.inner.out.weight.detach().std()) - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert torch.equal(model.head.norm.weight, torch.ones(256)) and not model.block0.attn.inner.qkv.bias.any()


@pytest.mark.parametrize(
    "build, phrase",
    [
        (lambda: transformer_lm((16,), 50, width=24, heads=5), "heads 5 must divide width 24"),
        (lambda: vit((3, 10, 10), 10, patch=4), "patch 4 must divide the image's side"),
        (lambda: transformer_lm((16,), 50, units="layers"), "units 'layers'"),
    ],
)
def test_bad_settings_are_named(build, phrase):
    with pytest.raises(ValueError, match=phrase):
        build()


def test_a_sequence_longer_than_the_context_is_named():
    with pytest.raises(ValueError, match="17 tokens is longer than the model's context 16"):
        lm()(torch.zeros(1, 17, dtype=torch.long))


def counted_macs(model, x):
    """Multiply-adds of one example through each unit: every Linear and Conv2d on all its positions,
    and each attention's two T×T products."""
    macs = {name: 0 for name in model.unit_names}

    def hook(name):
        def count(module, inputs, output):
            if isinstance(module, torch.nn.Linear):
                macs[name] += output.numel() * module.in_features
            elif isinstance(module, torch.nn.Conv2d):
                macs[name] += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            else:  # Attention: scores q·kᵀ and their mix with v
                _, tokens, width = inputs[0].shape
                macs[name] += 2 * tokens * tokens * width

        return count

    handles = [
        m.register_forward_hook(hook(name))
        for name in model.unit_names
        for m in model.unit(name).modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, Attention))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return macs


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"name": "transformer_lm", "layers": 2, "width": 16, "heads": 4}, (12,)),
        (
            {"name": "transformer_lm", "layers": 1, "width": 8, "units": "sublayers", "mlp_ratio": 2},
            (5,),
        ),
        ({"name": "vit", "patch": 4, "layers": 2, "width": 16}, (3, 8, 8)),
        (
            {"name": "vit", "patch": 2, "layers": 1, "width": 8, "units": "sublayers"},
            (1, 8, 8),
        ),
    ],
)
def test_shapes_name_the_units_and_count_the_multiply_adds(spec, shape):
    from layerprobe import models
    from layerprobe.config import shapes

    model = models.build(spec, shape, 10)
    planned = shapes.units(spec, shape, 10)
    assert [u.name for u in planned] == list(model.unit_names)
    x = torch.zeros(1, *shape, dtype=torch.long) if len(shape) == 1 else torch.zeros(1, *shape)
    assert {u.name: u.macs for u in planned} == counted_macs(model, x)


def test_adamw_with_warmup_cosine_clipping_and_step_epochs_resumes_bitwise(tmp_path, monkeypatch):
    """A training stopped after its second epoch's resume state continues to the same bits (AdamW's
    moments, the per-step schedule and the generators all restored)."""
    from layerprobe.data.dataset import Dataset
    from layerprobe.training import checkpoints, loop

    torch.manual_seed(0)
    x = torch.randint(0, 16, (40, 6))
    data = Dataset("toy", x, torch.roll(x, -1, 1), x[:8], torch.roll(x[:8], -1, 1), 16, (), ())
    factory = lambda: transformer_lm((6,), 16, layers=1, width=8, heads=2)  # noqa: E731
    # Epochs of 7 steps (steps_per_epoch): 56 examples a step count, so each epoch wraps into a second pass.
    recipe = {
        "recipe": "transformer-adamw",
        "epochs": 4,
        "steps_per_epoch": 7,
        "batch_size": 8,
        "warmup_steps": 7,
        "device": "cpu",
    }

    def run(folder):
        return loop.train(factory, data, recipe, 3, folder, [2], progress=False)

    whole = run(tmp_path / "whole")
    real = loop.train_epoch
    calls = []

    def stop_in_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill after the resume state of epoch 2
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", stop_in_third)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(loop, "train_epoch", real)
    resumed = run(tmp_path / "resumed")
    assert json.dumps(resumed) == json.dumps(whole)  # NaN-safe, exact floats
    # The learning rate each epoch starts with: warmup over 7 steps, then cosine over the other 21.
    assert whole[1]["lr"] == pytest.approx(0.001 / 7) and whole[2]["lr"] == pytest.approx(0.001)
    assert whole[4]["lr"] == pytest.approx(0.001 * 0.5 * (1 + math.cos(math.pi * 14 / 21)))
    for epoch in (0, 2, 4):
        a = checkpoints.load(checkpoints.path_for(tmp_path / "whole", epoch))["state_dict"]
        b = checkpoints.load(checkpoints.path_for(tmp_path / "resumed", epoch))["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
