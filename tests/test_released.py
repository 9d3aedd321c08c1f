"""A released checkpoint suite through the whole workflow: a tiny GPT-NeoX trained for a few steps, saved
as revisions step0, step1, step4, step16 and served by a fake hub on 127.0.0.1 (tests/fakehub.py); the
data tokenized with the suite's own tokenizer, every probe kind, the tables. Then what goes wrong: a
revision the hub does not have, revisions of two architectures, a tokenizer that is not the model's,
pickled weights only, a file changed after the fetch."""

from __future__ import annotations

import copy
import json
import shutil

import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

import fakesuite  # noqa: E402

from fakehub import serve  # noqa: E402
from test_workflow import planned_jobs, snakemake  # noqa: E402

REPO = "acme/tiny-neox"
STEPS = [0, 1, 4, 16]
REVISIONS = [f"step{s}" for s in STEPS]


def config(endpoint: str, **released) -> dict:
    return {
        "threads": 2,
        "datasets": {
            "pydoc": {
                "tokenizer": {"repo": REPO, "revision": "step16"},
                "sequence_length": 16,
                "max_tokens": {"train": 513, "test": 257},
            }
        },
        "runs": [
            {
                "name": "neox",
                "dataset": "pydoc",
                "released": {"repo": REPO, "revisions": REVISIONS, "endpoint": endpoint, **released},
                "joint_groups": {"both": ["layer0", "layer1"]},
            }
        ],
        "probes": {
            "rerandomize": {"enabled": True, "draws": 2},
            "interpolate": {"enabled": True, "alphas": 3},
            "criticality": {
                "enabled": True,
                "alphas": 2,
                "sigmas": [0.01, 0.1],
                "samples": 2,
                "subset": 4,
                "feasibility": {"measure": "error", "tolerance": "increase", "value": 0.05},
                "search": {"tolerance": 0.5, "floor": 0.001, "ceiling": 1.0},
            },
            "joint": {"enabled": True, "robust": True, "cumulative": True, "checkpoints": [0, 4]},
        },
        "engine": {"ops": "off"},
    }


TARGETS = ["results/tables/units.csv", "results/figures/neox/robustness_test.png"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The fake hub serving the suite (and, as acme/tiny-deep, a second one of another depth)."""
    root = tmp_path_factory.mktemp("hub")
    bpe = fakesuite.tokenizer()
    fakesuite.suite(root / REPO, fakesuite.gpt_neox(), STEPS, bpe)
    fakesuite.suite(root / "acme/tiny-deep", fakesuite.gpt_neox(layers=3), [4], bpe)
    with serve(root) as server:
        yield server


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, hub):
    folder = tmp_path_factory.mktemp("released_workflow")
    result = snakemake(folder, config(hub.endpoint), "--cores", "2", *TARGETS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def test_every_revision_is_fetched_verified_and_probed(workflow, hub):
    for revision in REVISIONS:
        marker = json.loads((workflow / f"data/hub/{REPO}/{revision}/revision.json").read_text())
        assert marker["weights"] == "safetensors" and {"config.json", "model.safetensors"} <= set(marker["files"])
    manifest = json.loads((workflow / "results/runs/neox/checkpoints/manifest.json").read_text())
    assert [e["epoch"] for e in manifest["checkpoints"]] == STEPS and manifest["model_type"] == "gpt_neox"
    rows = pd.read_csv(workflow / "results/tables/robustness.csv")
    assert set(rows["probe"]) >= {"reinit", "rerandomize", "interpolate", "criticality", "joint"}
    assert sorted(set(rows[rows["probe"] == "reinit"]["checkpoint"].dropna())) == STEPS


def test_the_units_are_the_architectures_own(workflow):
    units = pd.read_csv(workflow / "results/tables/units.csv")
    assert list(units["unit"]) == ["embed", "layer0", "layer1", "final_norm", "head"]
    assert units["final_test_perplexity"].between(1, 320).all()
    inventory = pd.read_csv(workflow / "results/runs/neox/probes/inventory.csv")
    assert set(inventory["num_classes"]) == {320}  # the model's padded vocabulary, not the tokenizer's 300


def test_the_data_is_tokenized_with_the_suites_tokenizer(workflow):
    import torch

    data = torch.load(workflow / "results/data/pydoc.pt", weights_only=True)
    assert data["num_classes"] == 300 and data["tokenizer"].startswith("sha256:")
    assert int(data["x_test"].max()) < 300


def test_nothing_is_stale_and_nothing_is_fetched_again(workflow, hub):
    before = sum(hub.requests.values())
    assert planned_jobs(snakemake(workflow, config(hub.endpoint), "-n", *TARGETS)) == {}
    edited = config("http://127.0.0.1:9")  # another address: the hashes, not the address, shape the files
    assert planned_jobs(snakemake(workflow, edited, "-n", *TARGETS)) == {}
    assert sum(hub.requests.values()) == before


def test_a_missing_revision_is_named_and_leaves_no_marker(tmp_path, hub):
    settings = config(hub.endpoint)
    settings["runs"][0]["released"]["revisions"] = ["step0", "step99"]
    result = snakemake(tmp_path, settings, "--cores", "1", "results/runs/neox/checkpoints/manifest.json")
    log = (tmp_path / f"logs/fetch/{REPO}/step99.log").read_text()
    assert result.returncode != 0
    assert f"{REPO}, revision 'step99': the revision does not exist in the repository" in log
    assert not (tmp_path / f"data/hub/{REPO}/step99/revision.json").exists()


def test_revisions_of_two_architectures_are_refused(tmp_path, hub):
    folder = tmp_path / "suite"
    for repo, revision in ((REPO, "step0"), ("acme/tiny-deep", "step4")):
        shutil.copytree(hub.root / repo / revision, folder / revision)
    settings = config(hub.endpoint, revisions=["step0", "step4"])
    settings["runs"][0]["released"] = {"folder": str(folder), "revisions": ["step0", "step4"]}
    result = snakemake(tmp_path, settings, "--cores", "1", "results/runs/neox/checkpoints/manifest.json")
    log = (tmp_path / "logs/released/neox.log").read_text()
    assert result.returncode != 0
    assert "revisions 'step0' and 'step4'" in log and "different architectures" in log and "num_hidden_layers" in log
    assert not (tmp_path / "results/runs/neox/checkpoints/manifest.json").exists()


def test_a_tokenizer_that_is_not_the_models_is_refused(tmp_path, hub):
    settings = config(hub.endpoint)
    settings["datasets"]["pydoc"] = {"sequence_length": 16, "max_tokens": {"train": 513, "test": 257}}  # bytes
    result = snakemake(tmp_path, settings, "--cores", "1", "results/runs/neox/probes/robustness.csv")
    log = (tmp_path / "logs/probe/neox.log").read_text()
    assert result.returncode != 0
    assert "dataset 'pydoc' holds byte tokens, but the checkpoints' tokenizer" in log
    assert "tokenizer: {repo: acme/tiny-neox, revision: step16}" in log


def test_pickled_weights_are_refused_unless_allowed(tmp_path, hub):
    folder = tmp_path / "suite"
    for revision in ("step0", "step4"):  # as older suites publish them (transformers 5 writes safetensors only)
        import torch
        from safetensors.torch import load_file

        shutil.copytree(hub.root / REPO / revision, folder / revision, ignore=shutil.ignore_patterns("*.safetensors"))
        torch.save(load_file(hub.root / REPO / revision / "model.safetensors"), folder / revision / "pytorch_model.bin")
    settings = config(hub.endpoint)
    settings["runs"][0]["released"] = {"folder": str(folder), "revisions": ["step0", "step4"]}
    target = "results/runs/neox/checkpoints/manifest.json"
    result = snakemake(tmp_path, settings, "--cores", "1", target)
    assert result.returncode != 0
    assert "pickled weights are refused" in (tmp_path / "logs/released/neox.log").read_text()
    allowed = copy.deepcopy(settings)
    allowed["runs"][0]["released"]["allow_pickle"] = True
    assert snakemake(tmp_path, allowed, "--cores", "1", target).returncode == 0
    assert "pytorch_model.bin" in (tmp_path / target).read_text()


def test_a_file_changed_after_the_fetch_is_named(tmp_path, workflow, hub):
    copy_ = tmp_path / "copy"
    shutil.copytree(workflow, copy_, ignore=shutil.ignore_patterns(".snakemake"))
    weights = copy_ / f"data/hub/{REPO}/step4/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    result = snakemake(
        copy_, config(hub.endpoint), "--cores", "1", "--forcerun", "probe", "results/runs/neox/probes/robustness.csv"
    )
    assert result.returncode != 0
    log = (copy_ / "logs/probe/neox.log").read_text()
    assert "model.safetensors: file of revision 'step4' differs from the SHA-256 it was fetched with" in log
