"""Bad input, table-driven: each case gets one clear error of the expected type, naming the key, split,
file or tensor, before any work — and leaves nothing behind (no output created, nothing given changed).

Three faces: the library (`layerprobe.probe`), a config (what the Snakefile validates at parse time,
and `snakemake -n` itself), and the files the workflow writes (data rule, checkpoints, job logs).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
import yaml
from torch import nn

import layerprobe
from layerprobe.base.atomic import sha256
from layerprobe.config import ConfigError, files
from layerprobe.data.prepare import prepare
from layerprobe.training import checkpoints
from layerprobe.training.loop import train
from layerprobe.validation.inputs import InputError
from layerprobe.validation.settings import validated

from conftest import REPO, SCHEMA, model_factory, tiny_run
from fakedata import idx_dataset
from fakedata import sha256 as sha256_bytes

# --- The library face -------------------------------------------------------------------------------------


def problem():
    """A small MLP, its checkpoints 0 and 3, and a test split of 50 examples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    init = copy.deepcopy(model.state_dict())
    final = {k: v + 0.1 * torch.randn_like(v) for k, v in init.items()}
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    return model, {0: init, 3: final}, x, y


QUICK = {"criticality": {"enabled": False}, "interpolate": {"alphas": 2}}


def replaced(state, key, value):
    return {**state, key: value}


def nan_at(tensor, count):
    out = tensor.clone()
    out.view(-1)[:count] = float("nan")
    return out


# Each case: (name, how it changes (model, checkpoints, data, keywords), error type, phrases the message holds).
LIBRARY_CASES = [
    (
        "nan in a checkpoint",
        lambda m, c, x, y: (m, {**c, 3: replaced(c[3], "0.weight", nan_at(c[3]["0.weight"], 3))}, (x, y), {}),
        InputError,
        ["checkpoint 3", "0.weight", "3 non-finite"],
    ),
    (
        "inf in an input",
        lambda m, c, x, y: (m, c, {"test": (torch.where(torch.arange(50)[:, None] < 2, torch.inf, x), y)}, {}),
        InputError,
        ["split 'test'", "inputs", "8 non-finite"],
    ),
    ("an empty split", lambda m, c, x, y: (m, c, {"test": (x[:0], y[:0])}, {}), InputError, ["split 'test'", "empty"]),
    ("data={}", lambda m, c, x, y: (m, c, {}, {}), InputError, ["data", "no splits"]),
    (
        "a model without parameters",
        lambda m, c, x, y: (nn.Sequential(nn.ReLU()), {0: {}, 3: {}}, (x, y), {}),
        InputError,
        ["model", "no parameters"],
    ),
    (
        "50 inputs with 40 labels",
        lambda m, c, x, y: (m, c, (x, y[:40]), {}),
        InputError,
        ["split 'test'", "50 inputs", "(40,)", "(50,)"],
    ),
    (
        "labels out of range",
        lambda m, c, x, y: (m, c, (x, torch.where(y == 0, 7, y)), {}),
        InputError,
        ["split 'test'", "labels", "outside 0..2", "3 outputs"],
    ),
    ("float labels", lambda m, c, x, y: (m, c, (x, y.float()), {}), InputError, ["split 'test'", "torch.float32"]),
    (
        "a wrong feature count",
        lambda m, c, x, y: (m, c, (torch.randn(50, 5), y), {}),
        InputError,
        ["split 'test'", "(5,)", "does not take"],
    ),
    (
        "splits of different shapes",
        lambda m, c, x, y: (m, c, {"test": (x, y), "train": (torch.randn(50, 6), y)}, {}),
        InputError,
        ["split 'train'", "(6,)", "(4,)"],
    ),
    (
        "a checkpoint tensor of the wrong shape",
        lambda m, c, x, y: (m, {**c, 3: replaced(c[3], "2.weight", torch.zeros(3, 9))}, (x, y), {}),
        InputError,
        ["checkpoint 3", "2.weight", "(3, 9)", "(3, 8)"],
    ),
    (
        "a checkpoint missing a key",
        lambda m, c, x, y: (m, {**c, 3: {k: v for k, v in c[3].items() if k != "2.bias"}}, (x, y), {}),
        InputError,
        ["checkpoint 3", "missing", "2.bias"],
    ),
    (
        "a checkpoint with a key the model lacks",
        lambda m, c, x, y: (m, {**c, 0: replaced(c[0], "head.weight", torch.zeros(1))}, (x, y), {}),
        InputError,
        ["checkpoint 0", "not in the model", "head.weight"],
    ),
    (
        "a checkpoint of another dtype",
        lambda m, c, x, y: (m, {**c, 3: replaced(c[3], "0.bias", c[3]["0.bias"].double())}, (x, y), {}),
        InputError,
        ["checkpoint 3", "0.bias", "torch.float64", "torch.float32"],
    ),
    (
        "no initialization",
        lambda m, c, x, y: (m, {3: c[3]}, (x, y), {}),
        InputError,
        ["checkpoints", "epoch 0", "[3]"],
    ),
    (
        "a checkpoint that is not a state dict",
        lambda m, c, x, y: (m, {**c, 3: [1, 2]}, (x, y), {}),
        InputError,
        ["checkpoint 3", "state dict", "list"],
    ),
    (
        "an unknown unit in a joint group",
        lambda m, c, x, y: (m, c, (x, y), {"joint_groups": {"pair": ["0", "9"]}}),
        ValueError,
        ["joint_groups.pair", "['9']", "units: 0, 2"],
    ),
    (
        "a misspelled probe setting",
        lambda m, c, x, y: (m, c, (x, y), {"probes": {"reinit": {"enabeld": True}}}),
        ConfigError,
        ["probes.reinit", "enabeld"],
    ),
    (
        "a split the data lacks",
        lambda m, c, x, y: (m, c, (x, y), {"probes": {**QUICK, "splits": ["test", "val"]}}),
        ValueError,
        ["probes.splits", "val"],
    ),
]


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_refuses_bad_input_before_evaluating(case, monkeypatch):
    _, change, error, phrases = case
    model, given, data, keywords = change(*problem())
    before = copy.deepcopy((given, data))
    from layerprobe.probing import engine

    def never(*args, **kwargs):
        raise AssertionError("evaluated despite bad input")

    monkeypatch.setattr(engine, "evaluate", never)
    keywords = {"probes": QUICK, **keywords}
    with pytest.raises(error) as info:
        layerprobe.probe(model, given, data, **keywords)
    message = str(info.value)
    assert all(p in message for p in phrases), message
    assert len(message.splitlines()) <= 2, message  # one clear error, not a dump
    assert _same(given, before[0]) and _same(data, before[1])  # nothing handed in was changed


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.nan_to_num(), b.nan_to_num())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return a == b


def test_non_finite_values_are_probed_when_the_user_opts_in():
    model, given, x, y = problem()
    given[3] = replaced(given[3], "0.weight", nan_at(given[3]["0.weight"], 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = layerprobe.probe(model, given, (x, y), QUICK, allow_nonfinite=True)
    assert any("checkpoint 3: tensor 0.weight holds 2 non-finite" in str(w.message) for w in caught)
    assert len(table) and table["loss"].isna().any()  # the user asked for it, and sees it


# --- A config, at parse time ------------------------------------------------------------------------------

TEST_CONFIG = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())


def edited(change):
    config = copy.deepcopy(TEST_CONFIG)
    change(config)
    return config


CONFIG_CASES = [
    (
        "a misspelled unit in joint_groups",
        # one seed of a configuration edited: the typo is named, before that the seeds now differ
        lambda c: c["runs"][0].update(joint_groups={"both": ["layer1", "layer9"]}),
        ["runs[0].joint_groups.both", "['layer9']", "units: layer1, layer2"],
    ),
    (
        "a reserved joint set name",
        lambda c: c["runs"][0].update(joint_groups={"fullmodel": ["layer1"]}),
        ["runs[0].joint_groups", "'fullmodel'", "reserved"],
    ),
    (
        "a misspelled unit of a conv net",
        lambda c: c["runs"][2].update(joint_groups={"top": ["stage1.block1", "fc9"]}),
        ["runs[2].joint_groups.top", "['fc9']", "units: stage1.block1, fc1, final_linear"],
    ),
    (
        "a joint checkpoint beyond training",
        lambda c: c["probes"]["joint"].update(checkpoints=[0, 10]),
        ["probes.joint.checkpoints", "[10]", "run 'fcn'", "run 'vgg'"],
    ),
    (
        "a run checkpoint beyond training, with joint checkpoints set",
        lambda c: c["runs"][0].update(checkpoints=[1, 10]),
        ["runs[0].checkpoints", "10"],
    ),
    ("an unknown top-level key", lambda c: c.update(probe={}), ["'probe' was unexpected"]),
    ("a misspelled training key", lambda c: c["runs"][0]["train"].update(learning_rate=0.1), ["runs[0].train"]),
    ("an unknown dataset", lambda c: c["runs"][2].update(dataset="digitz"), ["runs[2].dataset", "digitz"]),
    ("an unknown split", lambda c: c["probes"].update(splits=["test", "valid"]), ["probes", "valid"]),
    ("a subset of an unknown split", lambda c: c["probes"].update(subset={"valid": 10}), ["probes.subset", "valid"]),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_is_refused_at_parse_time_naming_the_key(case):
    _, change, phrases = case
    with pytest.raises(ConfigError) as info:
        validated(edited(change), SCHEMA)
    assert all(p in str(info.value) for p in phrases), str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize(
    "text, phrases",
    [
        (None, ["not found"]),
        ("runs: [\n  a: b\n", ["line 3", "not valid YAML"]),
        ("runs: []\nprobes: {}\nruns: []\n", ["line 3", "'runs' is given twice", "line 1"]),
        ("- just\n- a list\n", ["expected a mapping", "list"]),
    ],
    ids=["missing", "not YAML", "a key twice", "not a mapping"],
)
def test_config_files_get_one_line_naming_the_file(tmp_path, text, phrases):
    path = tmp_path / "mine.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        files.load(path)
    message = str(info.value)
    assert str(path) in message and len(message.splitlines()) == 1 and all(p in message for p in phrases), message


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_dry_run_with_a_misspelled_unit_fails_fast_naming_key_and_units(tmp_path):
    config = edited(lambda c: c["runs"][0].update(joint_groups={"both": ["layer1", "layer9"]}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode != 0 and elapsed < 10
    assert "runs[0].joint_groups.both: unknown unit(s) ['layer9']; units: layer1, layer2" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_a_key_given_twice_stops_the_workflow_naming_the_line(tmp_path):
    text = (REPO / ".test" / "config.yaml").read_text() + "threads: 1\n"
    (tmp_path / "mine.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "mine.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "key 'threads' is given twice" in result.stderr
    assert "mine.yaml" in result.stderr and "Traceback" not in result.stderr


# --- Files the workflow writes ----------------------------------------------------------------------------


def test_a_dataset_with_an_empty_split_is_refused_and_nothing_written(tmp_path):
    raw, _ = idx_dataset(n_test=0)
    paths = {}
    for role, data in raw.items():
        paths[role] = tmp_path / role
        paths[role].write_bytes(data)
    declaration = {
        "format": "idx",
        "num_classes": 4,
        "files": {role: {"urls": ["http://127.0.0.1:9/none"], "sha256": sha256_bytes(d)} for role, d in raw.items()},
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="dataset 'tiny_idx': its test split is empty"):
        prepare("tiny_idx", declaration, files=paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_the_data_rule_refuses_an_empty_split_and_writes_nothing(tmp_path):
    raw, _ = idx_dataset(n_test=0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for role, data in raw.items():
        (mirror / role).write_bytes(data)
    files_ = {role: {"urls": [(mirror / role).as_uri()], "sha256": sha256_bytes(d)} for role, d in raw.items()}
    config = {**TEST_CONFIG, "datasets": {"tiny_idx": {"format": "idx", "num_classes": 4, "files": files_}}}
    config["runs"] = [{**TEST_CONFIG["runs"][0], "dataset": "tiny_idx"}]
    config.pop("sweeps")  # one run: nothing to sweep
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "results/data/tiny_idx.pt"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "dataset 'tiny_idx': its test split is empty" in (tmp_path / "logs/data/tiny_idx.log").read_text()
    assert not (tmp_path / "results/data").exists() or not any((tmp_path / "results/data").iterdir())


def test_checkpoint_files_are_byte_reproducible(tmp_path, digits):
    run = tiny_run()
    torch.set_num_threads(1)
    for name in ("a", "b"):
        train(model_factory(run, digits), digits, run["train"], 0, tmp_path / name, run["checkpoints"], progress=False)
    assert (tmp_path / "a" / checkpoints.MANIFEST).read_bytes() == (tmp_path / "b" / checkpoints.MANIFEST).read_bytes()
    for path in (tmp_path / "a").glob("epoch_*.pt"):
        assert sha256(path) == sha256(tmp_path / "b" / path.name)


def test_a_manifest_write_a_kill_interrupted_is_cleaned_up_on_the_next_run(tmp_path, digits):
    run, folder = tiny_run(), tmp_path / "run"
    torch.set_num_threads(1)
    train(model_factory(run, digits), digits, run["train"], 0, folder, run["checkpoints"], progress=False)
    stray = folder / ".manifest.json.k9x_2abc.tmp.json"  # as atomic_path names it
    stray.write_text('{"checkpoints": [')
    (folder / checkpoints.MANIFEST).unlink()  # the kill came before the rename
    kept = sorted(p.name for p in folder.glob("epoch_*.pt"))
    train(model_factory(run, digits), digits, run["train"], 0, folder, run["checkpoints"], progress=False)
    assert not stray.exists() and sorted(p.name for p in folder.iterdir()) == sorted([*kept, checkpoints.MANIFEST])


LONG_TRAINING = {
    **TEST_CONFIG,
    "runs": [{**TEST_CONFIG["runs"][0], "train": {**TEST_CONFIG["runs"][0]["train"], "epochs": 40}}],
    "sweeps": [],  # one run: nothing to sweep
    "engine": {"ops": "off"},
}


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_a_resumed_training_job_keeps_its_log_lines(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(LONG_TRAINING))
    manifest = "results/runs/fcn/checkpoints/manifest.json"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", manifest]  # fmt: skip
    log = tmp_path / "logs" / "train" / "fcn.log"
    resume = tmp_path / "results/runs/fcn/checkpoints" / checkpoints.RESUME
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (resume.exists() and log.exists() and log.read_text().count("epoch ") >= 3):
            assert child.poll() is None, "the training to be killed ended early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)  # the driver and its job
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    first = log.read_text()
    unlocked = subprocess.run([*command, "--unlock"], capture_output=True, text=True, timeout=120)  # as after a kill
    assert unlocked.returncode == 0, unlocked.stderr
    result = subprocess.run([*command, "--rerun-incomplete"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    earlier, _, later = log.read_text().partition("resuming after epoch ")
    lines = [line for line in first.splitlines() if line.startswith("epoch ")][:-1]  # the last may be cut short
    assert lines and earlier.splitlines()[: len(lines)] == lines  # the killed job's lines, then where it went on
    assert later.split(" ")[0].isdigit() and "epoch 40," in later
    assert (tmp_path / manifest).exists()
