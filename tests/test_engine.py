"""The engine against the reference, on fresh random models and inputs, for every probe kind.

Models run in float64 so that the two summation orders cannot flip a prediction: rows must then
agree exactly in error and agreement, and in loss to float rounding. One float32 case checks the
production precision within one flipped prediction.
"""

import pytest
import torch
from torch import nn

from layerprobe import models
from layerprobe.base.seeds import derive_seed
from layerprobe.kinds import criticality, interpolate, joint, reinit, rerandomize
from layerprobe.models.units import inventory
from layerprobe.probing import compose, engine, reference
from layerprobe.probing.variants import Variant


class Residual(nn.Module):
    """x + conv(bn(relu(conv(x)))): a unit that is not a Sequential."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


class OwnNet(nn.Module):
    """A user's model: not a UnitChain, with a residual block and a parameter-free module."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Residual(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


class Scaled(nn.Module):
    """A user's model with a buffer that a state dict may not hold (persistent=False)."""

    def __init__(self, persistent=True):
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)
        self.register_buffer("scale", torch.tensor(0.5, dtype=torch.float64), persistent=persistent)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))) * self.scale)


def residual_chain():
    return models.UnitChain(
        [
            ("stem", nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())),
            ("resblk", Residual(4)),
            ("final_linear", nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))),
        ]
    )


FACTORIES = {
    "fcn": lambda: models.fcn((1, 8, 8), 10, depth=3, width=24),
    "vgg_bn": lambda: models.vgg((1, 8, 8), 10, stages=[[4], [6, 6]], fc=[12], batch_norm=True),
    "residual_chain": residual_chain,
    "own_net": OwnNet,
    "transformer_lm": lambda: models.MODELS["transformer_lm"]((12,), 16, layers=2, width=16, heads=2),
    "transformer_lm_sublayers": lambda: models.MODELS["transformer_lm"](
        (12,), 16, layers=1, width=16, heads=4, units="sublayers"
    ),
    "vit": lambda: models.MODELS["vit"]((1, 8, 8), 10, patch=4, layers=2, width=16, heads=2),
}


def setting(name, dtype=torch.float64):
    """Model, units, checkpoints, draws and data for one random case (BN statistics made non-trivial)."""
    factory = FACTORIES[name]
    generator = torch.Generator().manual_seed(derive_seed("test_engine", name))

    def randomized(seed):
        state = models.fresh_state(factory, seed)
        for key, value in state.items():
            if "running_mean" in key:
                value.normal_(generator=generator)
            elif "running_var" in key:
                value.uniform_(0.5, 2.0, generator=generator)
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

    checkpoints = {epoch: randomized(epoch + 100) for epoch in (0, 1, 5)}
    draws = {k: randomized(k + 200) for k in range(2)}
    model = factory().to(dtype)
    if name.startswith("transformer_lm"):  # token ids in, a next token per position out
        x = torch.randint(0, 16, (150, 12), generator=generator)
        y = torch.randint(0, 16, (150, 12), generator=generator)
    else:
        x = torch.randn(150, 1, 8, 8, generator=generator, dtype=dtype)
        y = torch.randint(0, 10, (150,), generator=generator)
    splits = {"test": (x, y), "train": (x[:41], y[:41])}

    def source(key):
        kind, index = key
        return checkpoints[index] if kind == "checkpoint" else draws[index]

    return model, inventory(model), checkpoints, source, splits


def every_probe(units):
    names = [u.name for u in units]
    seeds = {(u.name, i, k): derive_seed("noise", u.name, i, k) for u in units for i in range(2) for k in range(2)}
    return (
        reinit.describe(units, [0, 1, 5])
        + rerandomize.describe(units, [7, 8])
        + interpolate.describe(units, [0.0, 0.3, 1.0])
        + criticality.describe(units, [0.0, 0.6], [0.05, 0.5], seeds)
        + joint.describe(joint.cumulative_sets(units) + [("pair", (names[0], names[-1]))], [0, 1], [7, 8])
    )


MEASURED = ("error", "loss", "agreement", "worse", "better")


def assert_same_rows(expected, actual, loss_rel=1e-9, error_slack=0.0):
    """Rows equal; `error_slack` (a fraction of n) admits flipped predictions, which move the
    discordant counts too."""
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        described = {k: v for k, v in e.items() if k not in MEASURED}
        assert described == {k: v for k, v in a.items() if k not in MEASURED}
        assert abs(e["error"] - a["error"]) <= error_slack, (e, a)
        assert abs(e["agreement"] - a["agreement"]) <= 2 * error_slack, (e, a)
        for count in ("worse", "better"):
            assert isinstance(a[count], int) and abs(e[count] - a[count]) <= round(2 * error_slack * e["n"]), (e, a)
        if not error_slack:
            assert (e["worse"], e["better"]) == (a["worse"], a["better"]), (e, a)
        assert a["loss"] == pytest.approx(e["loss"], rel=loss_rel), (e, a)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("bn_stats", ["same_source", "trained"])
@pytest.mark.parametrize("device", DEVICES)
def test_engine_equals_reference_for_every_probe(name, bn_stats, device):
    model, units, checkpoints, source, splits = setting(name)
    variants = every_probe(units)
    expected = reference.evaluate(model, units, variants, checkpoints[5], source, splits, bn_stats)
    actual = engine.evaluate(model, units, variants, checkpoints[5], source, splits, bn_stats, device=device)
    assert_same_rows(expected, actual)
    assert {r["probe"] for r in actual} == {"reinit", "rerandomize", "interpolate", "criticality", "joint"}
    assert any(r["worse"] for r in actual) and any(r["better"] for r in actual)  # both counts are exercised
    # worse − better is the variant's errors less the final model's (the reinit row at the final epoch)
    for split, (_, y) in splits.items():
        final = next(r for r in actual if r["probe"] == "reinit" and r["checkpoint"] == 5 and r["split"] == split)
        assert final["worse"] == final["better"] == 0
        for r in (r for r in actual if r["split"] == split):
            assert r["worse"] - r["better"] == round((r["error"] - final["error"]) * y.numel()), r


@pytest.mark.parametrize("name", ["fcn", "vgg_bn"])
@pytest.mark.parametrize("device", DEVICES)
def test_engine_in_float32_matches_within_one_prediction(name, device):
    model, units, checkpoints, source, splits = setting(name, torch.float32)
    variants = reinit.describe(units, [0, 1]) + interpolate.describe(units, [0.0, 0.5, 1.0])
    expected = reference.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source")
    actual = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device=device)
    assert_same_rows(expected, actual, loss_rel=1e-4, error_slack=1 / 41)


def test_results_do_not_depend_on_the_memory_budget():
    model, units, checkpoints, source, splits = setting("vgg_bn")
    variants = every_probe(units)
    roomy = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu")
    tight = engine.evaluate(
        model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu", memory_budget=512 * 2**10
    )
    assert_same_rows(roomy, tight)


def test_engine_keeps_buffers_no_state_holds():
    """The engine runs a copy of the model without its weights; a non-persistent buffer, in no
    state, still comes from the model: the rows equal the reference's with the buffer in the states."""
    *_, splits = setting("fcn")  # 8×8 inputs, float64
    persistent = Scaled().double()
    units = inventory(persistent)
    states = {e: models.fresh_state(lambda: Scaled().double(), e) for e in (0, 5)}
    variants = reinit.describe(units, [0]) + interpolate.describe(units, [0.5])
    expected = reference.evaluate(persistent, units, variants, states[5], lambda k: states[k[1]], splits, "trained")
    lacking = {e: {k: v for k, v in s.items() if k != "scale"} for e, s in states.items()}
    actual = engine.evaluate(
        Scaled(persistent=False).double(), units, variants, lacking[5], lambda k: lacking[k[1]], splits, "trained"
    )
    assert_same_rows(expected, actual)


def test_engine_never_touches_the_model_or_the_states():
    model, units, checkpoints, source, splits = setting("fcn")
    before = (
        {k: v.clone() for k, v in model.state_dict().items()},
        {e: {k: v.clone() for k, v in s.items()} for e, s in checkpoints.items()},
    )
    engine.evaluate(model, units, every_probe(units), checkpoints[5], source, splits, "same_source", device="cpu")
    assert all(torch.equal(v, before[0][k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, before[1][e][k]) for e, s in checkpoints.items() for k, v in s.items())


def test_bad_input_is_named_before_any_evaluation():
    model, units, checkpoints, source, splits = setting("fcn")

    def run(variants, **options):
        return engine.evaluate(
            model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu", **options
        )

    with pytest.raises(ValueError, match="unknown unit.*'layer9'"):
        run([Variant("joint", "odd", ("layer1", "layer9"), ("checkpoint", 0))])
    with pytest.raises(ValueError, match="checkpoint 3, which does not exist"):
        run(reinit.describe(units, [3]))
    with pytest.raises(ValueError, match=r"α = 1.5 lies outside \[0, 1\]"):
        run([Variant("interpolate", "layer1", ("layer1",), ("checkpoint", 0), alpha=1.5)])
    with pytest.raises(engine.MemoryBudgetError, match="cannot hold one variant"):
        run(reinit.describe(units, [0]), memory_budget=1000)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        interpolate.describe(units, [0.0, -0.1])
    with pytest.raises(ValueError, match="σ must be > 0"):
        criticality.describe(units, [0.5], [0.0, 0.1], {})


def test_noise_is_seeded_and_fresh():
    _, units, checkpoints, _, _ = setting("fcn")
    variant = Variant("criticality", "layer2", ("layer2",), ("checkpoint", 0), 11, 0.5, 0.1, 0)
    again = compose.noise(variant, units, checkpoints[5])
    other = compose.noise(
        Variant("criticality", "layer2", ("layer2",), ("checkpoint", 0), 12, 0.5, 0.1, 0), units, checkpoints[5]
    )
    first = compose.noise(variant, units, checkpoints[5])
    assert list(first) == ["layer2.linear.weight", "layer2.linear.bias"]
    assert all(torch.equal(first[k], again[k]) and not torch.equal(first[k], other[k]) for k in first)
    flat = torch.cat([v.flatten() for v in first.values()]).float()
    assert abs(flat.mean()) < 0.05 and abs(flat.std() - 1) < 0.05


def test_a_chunk_draws_the_noise_of_each_seed_once():
    """Criticality variants of one seed (a unit, α and sample at several σ) share E: drawn once, equal to
    each variant's own draw."""
    _, units, checkpoints, _, _ = setting("fcn")
    chunk = [
        Variant("criticality", "layer2", ("layer2",), ("checkpoint", 0), seed, 0.5, sigma, 0)
        for seed, sigma in ((11, 0.1), (11, 0.3), (12, 0.1))
    ]
    drawn = compose.chunk_noise(chunk, units, checkpoints[5])
    assert drawn[0] is drawn[1] and drawn[0] is not drawn[2]
    for variant, noise in zip(chunk, drawn):
        own = compose.noise(variant, units, checkpoints[5])
        assert list(noise) == list(own) and all(torch.equal(noise[k], own[k]) for k in own)


@pytest.mark.parametrize("name", ["fcn", "vgg_bn"])
def test_noise_kept_for_later_calls_gives_the_same_rows(name):
    """The σ search's rounds pass one `noise` dict to every call: its draws serve calls that reuse seeds."""
    model, units, checkpoints, source, splits = setting(name)
    seeds = {(u.name, i, k): derive_seed("kept", u.name, i, k) for u in units for i in range(2) for k in range(2)}
    first, second = (criticality.describe(units, [0.0, 0.6], [s], seeds)[1:] for s in (0.05, 0.3))
    fresh = [engine.evaluate(model, units, vs, checkpoints[5], source, splits, "same_source") for vs in (first, second)]
    drawn = {}
    kept = [
        engine.evaluate(model, units, vs, checkpoints[5], source, splits, "same_source", noise=drawn)
        for vs in (first, second)
    ]
    assert kept == fresh and len(drawn) == len(seeds)  # one draw per seed, made by the first call


def test_probe_kinds_agree_where_they_coincide():
    """α = 0 is the reset to θ⁰, α = 1 the trained model; a one-unit joint set is that unit's reset."""
    model, units, checkpoints, source, splits = setting("vgg_bn")
    names = [u.name for u in units]
    variants = (
        reinit.describe(units, [0, 5])
        + interpolate.describe(units, [0.0, 1.0])
        + joint.describe([("one", (names[1],))], [0], [])
    )
    rows = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu")

    def pick(probe, unit, **cols):
        return [
            r for r in rows if r["probe"] == probe and r["unit"] == unit and all(r[k] == v for k, v in cols.items())
        ]

    for unit in names:
        for split in splits:
            at_init = pick("reinit", unit, checkpoint=0, split=split)[0]
            trained = pick("reinit", unit, checkpoint=5, split=split)[0]
            assert pick("interpolate", unit, alpha=0.0, split=split)[0]["error"] == at_init["error"]
            assert pick("interpolate", unit, alpha=1.0, split=split)[0]["error"] == trained["error"]
            assert trained["agreement"] == 1.0
    for split in splits:
        assert (
            pick("joint", "one", checkpoint=0, split=split)[0]["error"]
            == pick("reinit", names[1], checkpoint=0, split=split)[0]["error"]
        )
