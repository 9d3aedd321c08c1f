"""A Transformer LM through the whole workflow on the embedded corpus: data, training, every probe kind,
the tables (per-token metrics, perplexity), a heatmap and the summary; a second call has nothing to do."""

import numpy as np
import pandas as pd
import pytest
import torch

from test_workflow import planned_jobs, snakemake

CONFIG = {
    "threads": 2,
    "datasets": {"pydoc": {"sequence_length": 8, "max_tokens": {"train": 513, "test": 257}}},
    "runs": [
        {
            "name": "lm",
            "dataset": "pydoc",
            "model": {"name": "transformer_lm", "layers": 1, "width": 8, "heads": 2, "units": "sublayers"},
            "train": {
                "recipe": "transformer-adamw",
                "epochs": 2,
                "steps_per_epoch": 3,
                "batch_size": 8,
                "warmup_steps": 2,
            },
            "checkpoints": [1],
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
            "subset": 16,
            "feasibility": {"measure": "error", "tolerance": "increase", "value": 0.05},
            "search": {"tolerance": 0.5, "floor": 0.001, "ceiling": 1.0},
        },
        "joint": {"enabled": True, "robust": False, "cumulative": True},
    },
    "engine": {"ops": "off"},
}
TARGETS = ["results/tables/units.csv", "results/summary.rst", "results/figures/lm/robustness_test.png"]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_workflow")
    result = snakemake(folder, CONFIG, "--cores", "2", *TARGETS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def test_the_lm_is_probed_per_token_in_every_kind(workflow):
    rows = pd.read_csv(workflow / "results/tables/robustness.csv")
    assert set(rows["probe"]) >= {"reinit", "rerandomize", "interpolate", "criticality", "joint"}
    data = torch.load(workflow / "results/data/pydoc.pt", weights_only=True)
    tokens = {"test": data["y_test"].numel(), "train": data["y_train"].numel()}
    assert tokens == {"test": 256, "train": 512}  # (257 − 1) // 8 and (513 − 1) // 8 sequences of 8
    whole = rows[~rows["probe"].str.startswith("criticality")]
    assert (whole["n"] == whole["split"].map(tokens)).all()  # n counts tokens, not sequences
    assert set(rows[rows["probe"] == "criticality"]["n"]) == {16 * 8}


def test_the_units_are_the_sublayers_with_perplexity(workflow):
    units = pd.read_csv(workflow / "results/tables/units.csv")
    assert list(units["unit"]) == ["embed", "block0.attn", "block0.mlp", "head"]
    assert units["final_test_perplexity"].tolist() == pytest.approx(np.exp(units["final_test_loss"]).tolist())
    assert units["final_test_perplexity"].between(1, 256).all()
    assert "perplexity" in (workflow / "results/summary.rst").read_text()


def test_nothing_is_stale_after_the_run(workflow):
    assert planned_jobs(snakemake(workflow, CONFIG, "-n", *TARGETS)) == {}
