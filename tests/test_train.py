"""Training: checkpoints at the right epochs, bitwise reproducible, loud on divergence and bad files."""
import json
import re

import pytest
import torch

from layerprobe import checkpoints, train
from layerprobe.config import model_factory
from layerprobe.models import fresh_state

from conftest import tiny_run


def test_checkpoints_include_initialization_and_final_epoch(trained):
    run, factory, states, folder = trained
    assert sorted(states) == [0, 1, 2, 4]
    payload = torch.load(folder / "epoch_4.pt", weights_only=True)
    assert payload["epoch"] == 4 and payload["seed"] == run["seed"] and "state_dict" in payload


def test_epoch_zero_is_the_exact_initialization(trained):
    run, factory, states, _ = trained
    initial = fresh_state(factory, run["seed"])
    assert all(torch.equal(states[0][k], initial[k]) for k in initial)
    assert not torch.equal(states[4]["layer1.linear.weight"], initial["layer1.linear.weight"])


def test_training_is_bitwise_reproducible(tmp_path, digits, trained):
    run, factory, states, _ = trained
    log = train.train(factory, digits, run["train"], run["seed"], tmp_path, run["checkpoints"], progress=False)
    again = checkpoints.load_all(tmp_path / checkpoints.MANIFEST)
    assert all(torch.equal(again[e][k], states[e][k]) for e in states for k in states[e])
    assert [row["epoch"] for row in log] == [0, 1, 2, 3, 4]
    assert log[-1]["train_error"] < log[0]["train_error"]


def test_learning_rate_follows_the_milestones(tmp_path, digits):
    run = tiny_run()
    log = train.train(model_factory(run, digits), digits, run["train"], 0, tmp_path, [], progress=False)
    assert [row["lr"] for row in log[1:]] == pytest.approx([0.05, 0.05, 0.05, 0.005])


def test_divergence_names_the_epoch_and_keeps_earlier_checkpoints(tmp_path, digits):
    run = tiny_run()
    recipe = {**run["train"], "epochs": 30, "lr": 1e6, "lr_milestones": []}
    with pytest.raises(train.TrainingDiverged) as info:
        train.train(model_factory(run, digits), digits, recipe, 0, tmp_path, list(range(31)), progress=False)
    epoch = int(re.search(r"in epoch (\d+)", str(info.value)).group(1))
    assert epoch >= 1
    for e in range(epoch):  # every epoch before the NaN is saved and loads
        assert checkpoints.load(checkpoints.path_for(tmp_path, e))["epoch"] == e
    assert not checkpoints.path_for(tmp_path, epoch).exists()
    assert not (tmp_path / checkpoints.MANIFEST).exists()  # the run is not marked complete
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_truncated_checkpoint_is_named(tmp_path, trained):
    *_, folder = trained
    data = (folder / "epoch_2.pt").read_bytes()
    (tmp_path / "epoch_2.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoints.CheckpointError, match=r"epoch_2\.pt: corrupt or truncated"):
        checkpoints.load(tmp_path / "epoch_2.pt")


def test_manifest_catches_a_replaced_checkpoint(tmp_path, trained):
    *_, folder = trained
    for path in folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "epoch_1.pt").write_bytes((folder / "epoch_2.pt").read_bytes())
    with pytest.raises(checkpoints.CheckpointError, match=r"epoch_1\.pt: content differs"):
        checkpoints.load_all(tmp_path / checkpoints.MANIFEST)
    (tmp_path / "epoch_4.pt").unlink()
    manifest = json.loads((tmp_path / checkpoints.MANIFEST).read_text())
    manifest["checkpoints"] = manifest["checkpoints"][-1:]
    (tmp_path / checkpoints.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(checkpoints.CheckpointError, match=r"epoch_4\.pt: checkpoint file is missing"):
        checkpoints.load_all(tmp_path / checkpoints.MANIFEST)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(checkpoints.CheckpointError, match="x.pt: not a layerprobe checkpoint"):
        checkpoints.load(tmp_path / "x.pt")


def test_checkpoint_epochs_validation():
    assert train.checkpoint_epochs([3, 1], 5) == [0, 1, 3, 5]
    with pytest.raises(ValueError, match=r"\[7\] lie outside 0..5"):
        train.checkpoint_epochs([7], 5)


def test_retraining_replaces_an_earlier_training_wholesale(tmp_path, digits):
    run = tiny_run()
    factory = model_factory(run, digits)
    train.train(factory, digits, run["train"], 0, tmp_path, [1, 3], progress=False)
    assert (tmp_path / "epoch_3.pt").exists()
    train.train(factory, digits, run["train"], 1, tmp_path, [2], progress=False)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0.pt", "epoch_2.pt", "epoch_4.pt"]
    assert all(checkpoints.load(p)["seed"] == 1 for p in tmp_path.glob("epoch_*.pt"))
