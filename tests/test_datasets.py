"""The embedded digits dataset: real, split reproducibly by class, standardized on train."""

import pytest
import torch

from layerprobe.data import dataset
from layerprobe.data.prepare import prepare


def test_digits_shapes_and_split(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == torch.uint8
    assert digits.split("train")[0].dtype == torch.float32
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert len(digits.x_test) == 450
    assert digits.num_classes == 10 and set(digits.y_test.tolist()) == set(range(10))


def test_digits_split_is_stratified(digits):
    train_share = torch.bincount(digits.y_train).double() / len(digits.y_train)
    test_share = torch.bincount(digits.y_test).double() / len(digits.y_test)
    assert (train_share - test_share).abs().max() < 0.01


def test_digits_standardized_with_training_statistics(digits):
    x_train, x_test = digits.split("train")[0], digits.split("test")[0]
    assert x_train.mean().abs() < 1e-5
    assert abs(x_train.std().item() - 1) < 1e-3
    assert x_test.mean().abs() > 1e-5  # the test split is not rescaled on its own
    assert torch.equal(digits.normalize(digits.x_test[:5]), x_test[:5])  # batch by batch == whole


def test_digits_deterministic_and_seeded():
    a = prepare("digits", {"test_fraction": 0.25, "split_seed": 0})
    b = prepare("digits", {"test_fraction": 0.25, "split_seed": 0})
    c = prepare("digits", {"test_fraction": 0.25, "split_seed": 1})
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)


def test_save_load_roundtrip(tmp_path, digits):
    dataset.save(digits, tmp_path / "d.pt")
    loaded = dataset.load(tmp_path / "d.pt")
    assert torch.equal(loaded.x_test, digits.x_test) and loaded.num_classes == 10
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no temporary left behind


def test_unreadable_dataset_file_is_named(tmp_path):
    bad = tmp_path / "d.pt"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="d.pt"):
        dataset.load(bad)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnst': not a built-in .*digits.*mnist"):
        prepare("mnst", {})


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset format 'npz'; known: cifar, digits, idx, imagefolder"):
        prepare("mine", {"format": "npz", "num_classes": 10})
