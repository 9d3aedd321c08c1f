"""Training: checkpoints at the right epochs, bitwise reproducible, resumable after a kill, loud on divergence,
bad recipes and bad files."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from layerprobe.config import checkpoint_epochs, recipes
from layerprobe.data import dataset
from layerprobe.models import fresh_state
from layerprobe.training import checkpoints
from layerprobe.training import loop as train

from conftest import REPO, model_factory, tiny_run


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
    assert checkpoint_epochs([3, 1], 5) == [0, 1, 3, 5]
    with pytest.raises(ValueError, match=r"\[7\] lie outside 0..5"):
        checkpoint_epochs([7], 5)


def test_retraining_replaces_an_earlier_training_wholesale(tmp_path, digits):
    run = tiny_run()
    factory = model_factory(run, digits)
    train.train(factory, digits, run["train"], 0, tmp_path, [1, 3], progress=False)
    assert (tmp_path / "epoch_3.pt").exists()
    train.train(factory, digits, run["train"], 1, tmp_path, [2], progress=False)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0.pt", "epoch_2.pt", "epoch_4.pt"]
    assert all(checkpoints.load(p)["seed"] == 1 for p in tmp_path.glob("epoch_*.pt"))


# --- Resuming a killed training -------------------------------------------------------------------

CHILD = r"""
import sys, time
import torch
from layerprobe import models
from layerprobe.data import dataset
from layerprobe.training import augment, checkpoints
from layerprobe.training import loop as train

folder, marker, stop_at, where, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
run = {recipe}
torch.set_num_threads(1)
data = dataset.load(data)  # the parent's very tensors (the workflow's data file)

def hang():
    open(marker, "w").close()
    time.sleep(600)  # the parent kills this process here

if where == "batch":  # hang in the middle of an epoch: at the stop_at-th augmented batch
    crop_flip, calls = augment.crop_flip, [0]
    def slow(*args):
        calls[0] += 1
        if calls[0] == stop_at:
            hang()
        return crop_flip(*args)
    augment.crop_flip = slow
else:  # hang after epoch stop_at's resume state, before its checkpoint file
    save = checkpoints.save
    def slow(directory, epoch, *args, **kwargs):
        if epoch == stop_at:
            hang()
        return save(directory, epoch, *args, **kwargs)
    checkpoints.save = slow
factory = models.factory(run["model"], data.input_shape, data.num_classes)
train.train(factory, data, run["train"], run["seed"], folder, run["checkpoints"], progress=False)
"""


def augmented_run(**train_settings) -> dict:
    run = tiny_run(name="vgg", stages=[[4]], fc=[8], batch_norm=True)
    run["train"] = {
        "recipe": "cifar-sgd",
        "epochs": 6,
        "batch_size": 64,
        "lr_milestones": [3],
        "lr": 0.05,
        "augment": {"crop_padding": 1},
        "device": "cpu",
        **train_settings,
    }  # 8x8 digits: pad 1
    run["checkpoints"] = [2, 4]
    return run


def killed_then_resumed(tmp_path, digits, run, stop_at, where):
    folder, marker, data = tmp_path / "resumed", tmp_path / "marker", tmp_path / "digits.pt"
    dataset.save(digits, data)
    script = CHILD.format(recipe=repr(run))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(folder), str(marker), str(stop_at), where, str(data)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the training to be killed ended early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not (folder / checkpoints.MANIFEST).exists() and (folder / checkpoints.RESUME).exists()
    before = {p.name: p.read_bytes() for p in folder.glob("epoch_*.pt")}
    torch.set_num_threads(1)
    log = train.train(
        model_factory(run, digits), digits, run["train"], run["seed"], folder, run["checkpoints"], progress=False
    )
    for name, content in before.items():  # checkpoints of the killed run are kept, not rewritten
        assert (folder / name).read_bytes() == content
    return folder, log, before


def assert_same_training(folder_a, log_a, folder_b, log_b):
    assert json.dumps(log_a) == json.dumps(log_b)  # NaN-safe, exact floats
    states_a = checkpoints.load_all(folder_a / checkpoints.MANIFEST)
    states_b = checkpoints.load_all(folder_b / checkpoints.MANIFEST)
    assert sorted(states_a) == sorted(states_b) == [0, 2, 4, 6]
    for epoch, state in states_a.items():
        assert all(torch.equal(state[k], states_b[epoch][k]) for k in state), epoch
    assert not (folder_a / checkpoints.RESUME).exists() and not (folder_b / checkpoints.RESUME).exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits):
    run = augmented_run()
    folder = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed child trains
    log = train.train(
        model_factory(run, digits), digits, run["train"], run["seed"], folder, run["checkpoints"], progress=False
    )
    yield run, folder, log
    torch.set_num_threads(threads)


def test_killed_mid_epoch_resumes_bitwise(tmp_path, digits, uninterrupted):
    run, folder, log = uninterrupted
    batches_per_epoch = math.ceil(len(digits.x_train) / run["train"]["batch_size"])
    stop_at = 3 * batches_per_epoch + 5  # in epoch 4, after checkpoint 2 and the resume state of epoch 3
    resumed, resumed_log, before = killed_then_resumed(tmp_path, digits, run, stop_at, "batch")
    assert sorted(before) == ["epoch_0.pt", "epoch_2.pt"]
    assert_same_training(resumed, resumed_log, folder, log)


def test_killed_before_a_checkpoint_file_resumes_bitwise(tmp_path, digits, uninterrupted):
    run, folder, log = uninterrupted
    resumed, resumed_log, before = killed_then_resumed(tmp_path, digits, run, 4, "checkpoint")
    assert sorted(before) == ["epoch_0.pt", "epoch_2.pt"]  # epoch 4's state was saved, its file not
    assert_same_training(resumed, resumed_log, folder, log)


def test_changed_settings_train_from_scratch(tmp_path, digits, uninterrupted, monkeypatch):
    run, folder, log = uninterrupted
    factory = model_factory(run, digits)
    other = {**run["train"], "lr": 0.02}
    save = checkpoints.save

    def stopped(directory, epoch, *args, **kwargs):  # the other training stops after epoch 4's resume state
        if epoch == 4:
            raise KeyboardInterrupt
        return save(directory, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        train.train(factory, digits, other, run["seed"], tmp_path, run["checkpoints"], progress=False)
    monkeypatch.undo()
    assert (tmp_path / checkpoints.RESUME).exists()  # a consistent state a resume could continue from
    # ... but of other settings: not continued, the run is trained from scratch.
    again = train.train(factory, digits, run["train"], run["seed"], tmp_path, run["checkpoints"], progress=False)
    assert_same_training(tmp_path, again, folder, log)


def test_recipe_and_augmentation_are_recorded(uninterrupted):
    run, folder, log = uninterrupted
    payload = checkpoints.load(folder / "epoch_6.pt")
    assert payload["train"]["recipe"] == "cifar-sgd" and payload["train"]["augment"] == {
        "crop_padding": 1,
        "flip": True,
    }
    assert payload["train"]["weight_decay"] == 5e-4
    assert log[-1]["train_error"] < log[0]["train_error"]


def test_bad_recipe_is_an_error_before_training(tmp_path, digits):
    run = tiny_run()
    factory = model_factory(run, digits)
    with pytest.raises(recipes.RecipeError, match=r"train.recipe: unknown recipe 'cifar'; known recipes: cifar-sgd"):
        train.train(factory, digits, {"recipe": "cifar"}, 0, tmp_path, [], progress=False)
    with pytest.raises(recipes.RecipeError, match=r"train: .*'learning_rate' was unexpected"):
        train.train(factory, digits, {"recipe": "mnist-sgd", "learning_rate": 0.1}, 0, tmp_path, [], progress=False)
    with pytest.raises(recipes.RecipeError, match=r"train.precision: bf16 is autocast on CUDA only"):
        train.train(factory, digits, {"device": "cpu", "precision": "bf16"}, 0, tmp_path, [], progress=False)
    assert not list(tmp_path.iterdir())  # nothing was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_bf16_on_auto_without_cuda_falls_back_with_a_warning(tmp_path, digits):
    run = tiny_run()
    settings = {**run["train"], "epochs": 1, "lr_milestones": [], "precision": "bf16", "device": "auto"}
    with pytest.warns(UserWarning, match="bf16 is autocast on CUDA only; training on cpu in fp32"):
        log = train.train(model_factory(run, digits), digits, settings, 0, tmp_path, [], progress=False)
    assert len(log) == 2


def test_eval_every_skips_evaluations_between_checkpoints(tmp_path, digits):
    run = tiny_run()
    settings = {**run["train"], "eval_every": 3}
    log = train.train(model_factory(run, digits), digits, settings, 0, tmp_path, [1], progress=False)
    evaluated = [row["epoch"] for row in log if not math.isnan(row["test_error"])]
    assert evaluated == [0, 1, 3, 4]  # every 3rd epoch, the checkpoints and the last one


def test_lr_reference_batch_scales_the_learning_rate(tmp_path, digits):
    run = tiny_run()
    settings = {
        **run["train"],
        "epochs": 1,
        "lr_milestones": [],
        "lr": 0.1,
        "lr_reference_batch": 256,
        "batch_size": 64,
    }
    log = train.train(model_factory(run, digits), digits, settings, 0, tmp_path, [], progress=False)
    assert log[1]["lr"] == pytest.approx(0.025)


def test_unreadable_resume_state_is_an_error_that_keeps_the_run(tmp_path, digits, uninterrupted):
    run, folder, _ = uninterrupted
    for name in ("epoch_0.pt", "epoch_2.pt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / checkpoints.RESUME).write_bytes(b"not a resume state")
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(checkpoints.CheckpointError, match="resume.pt: unreadable resume state.*delete it"):
        train.train(
            model_factory(run, digits), digits, run["train"], run["seed"], tmp_path, run["checkpoints"], progress=False
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept


def test_clear_removes_what_a_killed_write_left(tmp_path):
    for name in (
        "epoch_0.pt",
        checkpoints.RESUME,
        ".epoch_4.pt.x1y2ab_9.tmp.pt",  # atomic_path's names: 8 random characters
        f".{checkpoints.RESUME}.abcdefgh.tmp.pt",
        f".{checkpoints.MANIFEST}.qwerty12.tmp.json",
        ".epoch_4.pt.x1y2.tmp.pt",  # not one of them: kept
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"x")
    checkpoints.clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch_4.pt.x1y2.tmp.pt", "notes.txt"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_with_augmentation_checkpoints_and_resumes(tmp_path, digits, precision):
    """On a GPU: device-side batches and augmentation, bf16 autocast, and a resume from an interrupted run."""
    run = augmented_run(device="cuda", precision=precision, epochs=4, lr_milestones=[2])
    run["checkpoints"] = [2]
    factory = model_factory(run, digits)
    whole = train.train(
        factory, digits, run["train"], run["seed"], tmp_path / "whole", run["checkpoints"], progress=False
    )
    assert all(math.isfinite(row["train_loss"]) for row in whole) and whole[-1]["train_error"] < whole[0]["train_error"]
    save = checkpoints.save

    def stopped(directory, epoch, *args, **kwargs):  # interrupted after epoch 3's resume state
        if epoch == 3:
            raise KeyboardInterrupt
        return save(directory, epoch, *args, **kwargs)

    checkpoints.save = stopped
    try:
        with pytest.raises(KeyboardInterrupt):
            train.train(
                factory,
                digits,
                {**run["train"], "epochs": 4},
                run["seed"],
                tmp_path / "resumed",
                [2, 3],
                progress=False,
            )
    finally:
        checkpoints.save = save
    assert (tmp_path / "resumed" / checkpoints.RESUME).exists()
    resumed = train.train(
        factory, digits, {**run["train"], "epochs": 4}, run["seed"], tmp_path / "resumed", [2, 3], progress=False
    )
    assert [r["epoch"] for r in resumed] == list(range(5)) and math.isfinite(resumed[-1]["train_loss"])
