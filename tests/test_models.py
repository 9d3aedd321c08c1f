"""Models are chains of named units; the inventory maps every parameter to exactly one unit."""

import pytest
import torch
from torch import nn

from layerprobe import models
from layerprobe.models.units import FULLMODEL, inventory


def test_fcn_units_as_in_the_paper():
    model = models.fcn((1, 28, 28), 10, depth=3, width=256)
    units = inventory(model)
    assert [u.name for u in units] == ["layer1", "layer2", "layer3", "layer4"]
    assert units[0].params == ("layer1.linear.weight", "layer1.linear.bias")
    assert [u.n_params for u in units] == [784 * 256 + 256, 256 * 257, 256 * 257, 257 * 10]
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_vgg_units_with_batch_norm():
    model = models.vgg((1, 8, 8), 10, stages=[[4], [8, 8]], fc=[16, 16], batch_norm=True)
    units = inventory(model)
    assert [u.name for u in units] == ["stage1.block1", "stage2.block1", "stage2.block2", "fc1", "fc2", "final_linear"]
    block = units[1]
    assert block.params == (
        "stage2.block1.conv.weight",
        "stage2.block1.conv.bias",
        "stage2.block1.bn.weight",
        "stage2.block1.bn.bias",
    )
    assert set(block.buffers) == {
        "stage2.block1.bn.running_mean",
        "stage2.block1.bn.running_var",
        "stage2.block1.bn.num_batches_tracked",
    }
    assert model.eval()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert units[3].n_params == 8 * 2 * 2 * 16 + 16  # two pools: 8x8 -> 2x2


def test_vgg_refuses_to_pool_below_one_pixel():
    with pytest.raises(ValueError, match="stages"):
        models.vgg((1, 2, 2), 10, stages=[[4], [4]])


def test_build_from_config_entry_and_unknown_name():
    assert isinstance(models.build({"name": "fcn", "depth": 1, "width": 8}, (1, 8, 8), 10), models.UnitChain)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build({"name": "resnet"}, (1, 8, 8), 10)


@pytest.mark.parametrize(
    "name, blocks",
    [("vgg11", [1, 1, 2, 2, 2]), ("vgg13", [2, 2, 2, 2, 2]), ("vgg16", [2, 2, 3, 3, 3]), ("vgg19", [2, 2, 4, 4, 4])],
)
def test_paper_vggs(name, blocks):
    model = models.build({"name": name, "batch_norm": True}, (3, 32, 32), 10)
    expected = [f"stage{s}.block{b}" for s, n in enumerate(blocks, 1) for b in range(1, n + 1)]
    assert [u.name for u in inventory(model)] == expected + ["fc1", "fc2", "final_linear"]
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "depth, blocks, params",
    [(18, [2, 2, 2, 2], 11_173_962), (34, [3, 4, 6, 3], 21_282_122), (50, [3, 4, 6, 3], 23_520_842)],
)
@pytest.mark.parametrize("stem, size", [("cifar", 32), ("imagenet", 64)])
def test_paper_resnets(depth, blocks, params, stem, size):
    model = models.build({"name": f"resnet{depth}", "stem": stem}, (3, size, size), 10)
    units = inventory(model)
    expected = [f"stage{s}.resblk{b}" for s, n in enumerate(blocks, 1) for b in range(1, n + 1)]
    assert [u.name for u in units] == ["stage0"] + expected + ["final_linear"]
    # torchvision's CIFAR-style ResNets with 10 classes have these sizes (stem conv 3x3 or 7x7 differs)
    stem_extra = 0 if stem == "cifar" else 64 * 3 * (49 - 9)
    assert sum(u.n_params for u in units) == params + stem_extra
    assert units[-1].params == ("final_linear.linear.weight", "final_linear.linear.bias")
    assert model.eval()(torch.zeros(2, 3, size, size)).shape == (2, 10)


def test_unit_lookup_names_the_units():
    model = models.fcn((1, 8, 8), 10, depth=1, width=8)
    with pytest.raises(KeyError, match="layer9.*layer1, layer2"):
        model.unit("layer9")


def test_fresh_state_is_a_seeded_draw_of_the_default_initializers():
    factory = lambda: models.fcn((1, 8, 8), 10, depth=1, width=8)  # noqa: E731
    a, b, c = models.fresh_state(factory, 7), models.fresh_state(factory, 7), models.fresh_state(factory, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layer1.linear.weight"], c["layer1.linear.weight"])
    bound = 1 / 64**0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert a["layer1.linear.weight"].abs().max() <= bound


def test_other_models_are_grouped_per_top_level_module():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    units = inventory(model)
    assert [(u.name, u.rule) for u in units] == [("1", "per block"), ("3", "per block")]


def test_fullmodel_is_reserved():
    with pytest.raises(ValueError, match="reserved"):
        inventory(models.UnitChain([(FULLMODEL, nn.Linear(2, 2))]))
