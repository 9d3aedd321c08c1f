"""Re-initialization and re-randomization of a trained run, checked against models loaded by hand."""

import copy

import pytest
import torch

from layerprobe import models, study
from layerprobe.base.metrics import classify
from layerprobe.config import validate
from layerprobe.kinds import reinit
from layerprobe.models.units import FULLMODEL, inventory
from layerprobe.probing import compose, reference
from layerprobe.results.intervals import paired_increase, wilson
from layerprobe.study import run_columns

from conftest import SCHEMA, model_factory, tiny_run

CONFIG = validate(
    {
        "runs": [{"name": "r", "dataset": "digits", "model": {"name": "fcn"}, "checkpoints": [1]}],
        "probes": {
            "rerandomize": {"draws": 3, "seed": 5},
            "interpolate": {"enabled": False},
            "criticality": {"enabled": False},
            "joint": {"enabled": False},
        },
    },
    SCHEMA,
)
SETTINGS = CONFIG["probes"]


def probe_run(trained, digits):
    run, factory, states, _ = trained
    return study.probe_run(
        factory,
        states,
        digits.splits(),
        SETTINGS,
        run_columns(run),
        digits.num_classes,
        categories=CONFIG["categories"],
        device="cpu",
        progress=False,
    )


@pytest.fixture(scope="module")
def tables(trained, digits):
    return probe_run(trained, digits)


def direct_error(factory, state, digits, split="test"):
    """Evaluate a plain module loaded the ordinary way (independent of the reference's code path)."""
    model = factory()
    model.load_state_dict(state)
    return classify(model.eval(), *digits.split(split))


def test_table_shape(tables, trained):
    run, factory, states, _ = trained
    rob = tables["robustness"]
    n_labels = len(inventory(factory())) + 1  # units + fullmodel
    assert len(rob[rob.probe == "reinit"]) == n_labels * len(states) * 2
    assert len(rob[rob.probe == "rerandomize"]) == n_labels * 3 * 2
    assert set(rob.columns) >= {
        "run",
        "dataset",
        "model",
        "seed",
        "probe",
        "unit",
        "checkpoint",
        "alpha",
        "sigma",
        "draw",
        "split",
        "error",
        "loss",
        "agreement",
        "n",
    }
    assert rob["alpha"].isna().all() and rob["sigma"].isna().all()


def test_reset_to_final_checkpoint_reproduces_the_model_exactly(tables, trained, digits):
    run, factory, states, _ = trained
    rob = tables["robustness"]
    for split in ("test", "train"):
        final = direct_error(factory, states[4], digits, split)
        at_final = rob[(rob.probe == "reinit") & (rob.checkpoint == 4) & (rob.split == split)]
        assert len(at_final) == 4
        assert (at_final["error"] == final["error"]).all()
        assert at_final["loss"].tolist() == pytest.approx([final["loss"]] * 4, rel=1e-6)
        assert (at_final["agreement"] == 1.0).all()


def test_reinit_matches_loading_the_unit_by_hand(tables, trained, digits):
    run, factory, states, _ = trained
    rob = tables["robustness"]
    for unit in ("layer1", "layer3"):
        model = factory()
        model.load_state_dict(states[4])
        original = {k: v.clone() for k, v in model.state_dict().items()}
        prefix = unit + "."
        model.unit(unit).load_state_dict({k[len(prefix) :]: v for k, v in states[0].items() if k.startswith(prefix)})
        expected = classify(model.eval(), *digits.split("test"))
        row = rob[(rob.probe == "reinit") & (rob.unit == unit) & (rob.checkpoint == 0) & (rob.split == "test")].iloc[0]
        assert row["error"] == expected["error"] and row["loss"] == pytest.approx(expected["loss"], rel=1e-6)
        reference_pred = classify(
            lambda x, model=model, original=original: torch.func.functional_call(model, original, (x,)),
            *digits.split("test"),
        )
        assert row["agreement"] == (expected["predictions"] == reference_pred["predictions"]).double().mean().item()
        # the discordant counts against the final model, and the intervals made from them
        y = digits.split("test")[1]
        before, after = reference_pred["predictions"] == y, expected["predictions"] == y
        assert (row["worse"], row["better"]) == (int((before & ~after).sum()), int((~before & after).sum()))
        errors, n = int((~after).sum()), len(y)
        assert (row["error_low"], row["error_high"]) == wilson(errors, n)
        assert (row["increase_low"], row["increase_high"]) == paired_increase(errors, row["worse"], row["better"], n)
        assert row["increase_low"] <= row["increase"] == (row["worse"] - row["better"]) / n <= row["increase_high"]


def test_fullmodel_rows_are_the_checkpoints_themselves(tables, trained, digits):
    run, factory, states, _ = trained
    rob = tables["robustness"]
    for epoch in states:
        row = rob[(rob.unit == FULLMODEL) & (rob.checkpoint == epoch) & (rob.split == "train")].iloc[0]
        assert row["error"] == direct_error(factory, states[epoch], digits, "train")["error"]


def test_rerandomized_draws_are_reproducible_from_their_seeds(tables, trained, digits):
    run, factory, states, _ = trained
    rob = tables["robustness"]
    draws = rob[(rob.probe == "rerandomize") & (rob.unit == "layer2") & (rob.split == "test")]
    assert draws["draw"].tolist() == [0, 1, 2] and draws["draw_seed"].nunique() == 3
    assert run["seed"] not in draws["draw_seed"].tolist()
    for row in draws.itertuples():
        fresh = models.fresh_state(factory, row.draw_seed)
        assert not torch.equal(fresh["layer2.linear.weight"], states[0]["layer2.linear.weight"])
        state = {**states[4], **{k: v for k, v in fresh.items() if k.startswith("layer2.")}}
        assert row.error == direct_error(factory, state, digits)["error"]


def test_probing_never_touches_the_trained_weights_and_is_deterministic(trained, digits, tables):
    run, factory, states, _ = trained
    before = copy.deepcopy(states)
    again = probe_run(trained, digits)
    assert all(torch.equal(before[e][k], states[e][k]) for e in states for k in states[e])
    for name in tables:
        assert tables[name].to_csv() == again[name].to_csv()


def test_bn_stats_policy(digits):
    run = tiny_run(name="vgg", stages=[[4]], fc=[8], batch_norm=True)
    factory = model_factory(run, digits)
    model = factory()
    units = inventory(model)
    torch.manual_seed(0)
    final = {k: v + torch.rand_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()}
    source = model.state_dict()
    variant = reinit.describe(units, [0])[0]
    assert variant.label == "stage1.block1"
    same = compose.compose(variant, units, final, source, "same_source")
    kept = compose.compose(variant, units, final, source, "trained")
    key = "stage1.block1.bn.running_mean"
    assert torch.equal(same[key], source[key]) and torch.equal(kept[key], final[key])
    assert torch.equal(kept["stage1.block1.bn.weight"], source["stage1.block1.bn.weight"])
    assert torch.equal(same["fc1.linear.weight"], final["fc1.linear.weight"])
    with pytest.raises(ValueError, match="bn_stats"):
        compose.compose(variant, units, final, source, "fresh")
    rows = reference.evaluate(
        model, units, [variant], final, lambda key: source, {"test": digits.split("test")}, "trained"
    )
    assert rows[0]["bn_stats"] == "trained" and 0 <= rows[0]["error"] <= 1


def test_subset_evaluates_the_same_seeded_examples_with_the_transform(trained, digits):
    run, factory, states, _ = trained
    settings = copy.deepcopy(SETTINGS) | {"subset": {"train": 100}}
    raw = {name: digits.raw(name) for name in ("test", "train")}
    got = study.probe_run(
        factory,
        states,
        raw,
        settings,
        run_columns(run),
        digits.num_classes,
        categories=CONFIG["categories"],
        device="cpu",
        progress=False,
        transform=digits.normalize,
    )["robustness"]
    assert set(got.loc[got.split == "train", "n"]) == {100} and set(got.loc[got.split == "test", "n"]) == {450}
    # Selected from the raw images, then standardized: the same as subsampling standardized inputs.
    x, y = study.subsample(*digits.split("train"), 100, "probe subset", settings["subset_seed"], "train")
    model = factory()
    model.load_state_dict(states[max(states)])
    final = got[(got.unit == FULLMODEL) & (got.checkpoint == max(states)) & (got.split == "train")]
    assert final.error.iloc[0] == classify(model.eval(), x, y)["error"]
    with pytest.raises(ValueError, match=r"probes.subset: no data for split\(s\) \['valid'\]"):
        study.probe_run(
            factory,
            states,
            raw,
            SETTINGS | {"subset": {"valid": 5}},
            run_columns(run),
            digits.num_classes,
            categories=CONFIG["categories"],
            device="cpu",
            progress=False,
        )
