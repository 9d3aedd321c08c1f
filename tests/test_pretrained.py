"""Hugging Face models as unit chains (layerprobe.models.pretrained): the chain is the model's own forward,
its units cover it, the engine equals the model's own forward variant by variant, and weights round-trip.

Tiny random configs of each architecture; float64, so that the engine's summation orders cannot flip
a prediction against the reference (the Hugging Face model's forward with each variant's weights).
"""

import copy

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

import layerprobe  # noqa: E402
from layerprobe import models  # noqa: E402
from layerprobe.base.metrics import classify  # noqa: E402
from layerprobe.base.seeds import derive_seed  # noqa: E402
from layerprobe.models import pretrained  # noqa: E402
from layerprobe.models.chain import UnitChain  # noqa: E402
from layerprobe.models.units import inventory  # noqa: E402
from layerprobe.probing import engine  # noqa: E402
from layerprobe.probing.compose import compose  # noqa: E402
from layerprobe.probing.variants import row  # noqa: E402

from test_engine import assert_same_rows, every_probe  # noqa: E402

VOCAB, LENGTH = 97, 16
# initializer_range 0.2: logits far enough apart that a prediction is no near-tie
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=VOCAB,
    max_position_embeddings=32,
    initializer_range=0.2,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=None,
)


def configs() -> dict:
    t = transformers
    out = {
        "gpt_neox_parallel": t.GPTNeoXConfig(**SMALL, use_parallel_residual=True, rotary_pct=0.5),
        "gpt_neox_sequential": t.GPTNeoXConfig(**SMALL, use_parallel_residual=False, rotary_pct=0.25),
        "gpt2": t.GPT2Config(
            n_embd=32,
            n_layer=3,
            n_head=4,
            vocab_size=VOCAB,
            n_positions=32,
            initializer_range=0.2,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "llama_gqa": t.LlamaConfig(**SMALL, num_key_value_heads=2, tie_word_embeddings=True),
        "vit": t.ViTConfig(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=8,
            patch_size=4,
            num_channels=3,
            num_labels=3,
            initializer_range=0.2,
        ),
    }
    if hasattr(t, "OlmoConfig"):
        out["olmo"] = t.OlmoConfig(**SMALL, num_key_value_heads=2)
    if hasattr(t, "Olmo2Config"):
        out["olmo2"] = t.Olmo2Config(**SMALL, num_key_value_heads=2)
    return out


CONFIGS = configs()
CASES = [(name, units) for name in CONFIGS for units in pretrained.UNITS]


def inputs(config, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if config.model_type == "vit":
        return torch.randn(n, 3, 8, 8, generator=generator, dtype=torch.float64), torch.randint(
            0, 3, (n,), generator=generator
        )
    return torch.randint(0, VOCAB, (n, LENGTH), generator=generator), torch.randint(
        0, VOCAB, (n, LENGTH), generator=generator
    )


def hf_forward(hf, config, x: torch.Tensor) -> torch.Tensor:
    if config.model_type == "vit":
        return hf(pixel_values=x).logits
    return hf(input_ids=x, use_cache=False).logits


@pytest.mark.parametrize("name, units", CASES)
def test_chain_is_the_models_own_forward(name, units):
    config = CONFIGS[name]
    torch.manual_seed(0)
    model = pretrained.build(config, units).double()
    assert not model.training and (isinstance(model, UnitChain) or name == "gpt_neox_parallel")
    x, _ = inputs(config, 5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x), hf_forward(pretrained.hf_model(model), config, x)
    assert ours.dtype == torch.float64
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    if config.model_type != "vit":  # causal: a later token changes no earlier position's logits
        changed = x.clone()
        changed[:, 10] = (changed[:, 10] + 1) % VOCAB
        with torch.no_grad():
            again = model(changed)
        assert torch.equal(again[:, :10], ours[:, :10]) and not torch.equal(again[:, 10:], ours[:, 10:])


@pytest.mark.parametrize("name, units", CASES)
def test_units_cover_the_model(name, units):
    config = CONFIGS[name]
    model = pretrained.build(config, units)
    found = inventory(model)
    assert [u.name for u in found] == pretrained.unit_names(config, units)
    if isinstance(model, UnitChain):
        assert list(model.unit_names) == pretrained.unit_names(config, units)
        assert pretrained.unit_rule(model) == "unit chain"
    else:  # the library finds the mapping itself: layerprobe.probe needs no unit_rule
        assert inventory(model, pretrained.unit_rule(model)) == found
        assert list(layerprobe.units(model)["unit"].dropna())[: len(found)] == [u.name for u in found]
    owned = [k for u in found for k in u.params]
    assert sorted(owned) == sorted(k for k, _ in model.named_parameters())  # every parameter, once
    # the state dict holds exactly the units' entries (the rotary inv_freq is no entry)
    assert set(model.state_dict()) == {k for u in found for k in u.keys}
    # each entry is the Hugging Face model's tensor itself (shared), and the head is its own
    keys = pretrained.hf_keys(model)
    theirs = pretrained.hf_model(model).state_dict(keep_vars=True)
    assert all(t is theirs[keys[k]] for k, t in model.state_dict(keep_vars=True).items())
    if config.model_type != "vit":
        embed = next(u for u in found if u.name == "embed").params
        head = next(u for u in found if u.name == "head").params
        assert not {id(t) for k, t in model.named_parameters() if k in embed} & {
            id(t) for k, t in model.named_parameters() if k in head
        }


def setting(name, units):
    """Model (float64), units, checkpoints 0, 1, 5, two draws and data for one random case."""
    config = CONFIGS[name]
    factory = pretrained.factory(config, units)
    generator = torch.Generator().manual_seed(derive_seed("test_pretrained", name, units))

    def randomized(seed):  # a build, every entry perturbed: norms and biases differ between checkpoints
        state = models.fresh_state(factory, seed)
        return {
            k: v.double() + 0.1 * torch.randn(v.shape, generator=generator, dtype=torch.float64)
            for k, v in state.items()
        }

    checkpoints = {epoch: randomized(epoch + 100) for epoch in (0, 1, 5)}
    draws = {k: models.fresh_state(factory, k + 200) for k in range(2)}
    draws = {k: {key: v.double() for key, v in s.items()} for k, s in draws.items()}
    model = factory().double()
    x, y = inputs(config, 32, generator)
    splits = {"test": (x, y), "train": (x[:11], y[:11])}

    def source(key):
        kind, index = key
        return checkpoints[index] if kind == "checkpoint" else draws[index]

    return config, model, inventory(model), checkpoints, source, splits


def hf_reference(config, model, units, variants, final, source, splits, bn_stats):
    """The plain loop on the Hugging Face model: each variant's weights loaded, its own forward."""
    hf = copy.deepcopy(pretrained.hf_model(model))
    keys = pretrained.hf_keys(model)

    def forward(state):
        hf.load_state_dict({keys[k]: v for k, v in state.items()}, strict=True)
        return lambda x: hf_forward(hf, config, x)

    with torch.no_grad():
        reference = {s: classify(forward(final), x, y)["predictions"] for s, (x, y) in splits.items()}
        rows = []
        for v in variants:
            run = forward(compose(v, units, final, source(v.source), bn_stats))
            rows += [row(v, bn_stats, s, classify(run, x, y, reference=reference[s])) for s, (x, y) in splits.items()]
    return rows


@pytest.mark.parametrize("name, units", CASES)
def test_engine_equals_the_models_own_forward_for_every_probe(name, units):
    config, model, units_, checkpoints, source, splits = setting(name, units)
    variants = every_probe(units_)
    expected = hf_reference(config, model, units_, variants, checkpoints[5], source, splits, "same_source")
    actual = engine.evaluate(model, units_, variants, checkpoints[5], source, splits, "same_source", device="cpu")
    assert_same_rows(expected, actual)
    assert {r["probe"] for r in actual} == {"reinit", "rerandomize", "interpolate", "criticality", "joint"}
    assert any(r["worse"] for r in actual) and any(r["better"] for r in actual)


def test_fresh_state_is_the_architectures_seeded_init():
    config = CONFIGS["gpt_neox_sequential"]
    wide = transformers.GPTNeoXConfig(**{**SMALL, "hidden_size": 64, "initializer_range": 0.02})
    factory = pretrained.factory(wide)
    first, again, other = (models.fresh_state(factory, s) for s in (3, 3, 4))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    weight = "layer0.block.attention.query_key_value.weight"
    assert not torch.equal(first[weight], other[weight])
    assert first[weight].std().item() == pytest.approx(wide.initializer_range, rel=0.05)
    assert torch.equal(first["layer0.block.input_layernorm.weight"], torch.ones(64))
    assert first["embed.tokens.weight"].dtype == torch.float32
    assert pretrained.factory(config)().state_dict().keys() == models.fresh_state(pretrained.factory(config), 0).keys()


@pytest.mark.parametrize("name", ["gpt_neox_parallel", "gpt2", "llama_gqa", "vit"])
def test_load_state_round_trip(name, tmp_path):
    config = CONFIGS[name]
    torch.manual_seed(5)
    auto = transformers.AutoModelForImageClassification if name == "vit" else transformers.AutoModelForCausalLM
    saved = auto.from_config(config)  # tied as the config says (GPT-2, this Llama): the file holds one matrix
    saved.save_pretrained(tmp_path / "safe")
    model = pretrained.build(pretrained.load_config(tmp_path / "safe"))
    state = pretrained.load_state(tmp_path / "safe", model)
    keys = pretrained.hf_keys(model)
    theirs = saved.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], theirs[keys[k]]) and state[k].dtype == torch.float32 for k in state)
    if getattr(config, "tie_word_embeddings", False):  # the head got a copy of the embedding
        assert torch.equal(state["head.lm_head.weight"], state["embed.tokens.weight"])
    model.load_state_dict(state)  # what the chain runs

    # transformers 5 writes safetensors only: a pickled revision (older Pythia) written by hand
    saved.config.save_pretrained(tmp_path / "pickled")
    torch.save(saved.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*allow_pickle"):
        pretrained.load_state(tmp_path / "pickled", model)
    pickled = pretrained.load_state(tmp_path / "pickled", model, allow_pickle=True)
    assert all(torch.equal(pickled[k], state[k]) for k in state)


def test_bad_folders_are_named(tmp_path):
    config = CONFIGS["gpt_neox_parallel"]
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "cut")
    file = tmp_path / "cut" / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    model = pretrained.build(config)
    with pytest.raises(ValueError, match=r"cut/model\.safetensors"):
        pretrained.load_state(tmp_path / "cut", model)

    bert = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"bert.*'bert'.*supported: gpt_neox, gpt2, llama"):
        pretrained.load_config(tmp_path / "bert")
    with pytest.raises(ValueError, match="units 'blocks'"):
        pretrained.build(config, "blocks")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("units", ["layers", "sublayers"])
def test_the_workflow_plans_the_units_the_model_has(name, units):
    """config.shapes.released reads the units from config.json alone (the workflow checks unit names and
    plans shards with them before any torch runs): the same names, in order, as the built model's."""
    from layerprobe.config import shapes

    config = CONFIGS[name]
    shape = (3, 8, 8) if name == "vit" else (LENGTH,)
    planned = shapes.released(config.to_dict(), units, shape)
    assert [u.name for u in planned] == [u.name for u in inventory(pretrained.build(config, units))]
    assert [u.name for u in planned] == pretrained.unit_names(config, units)
    assert all(u.macs >= 0 for u in planned) and planned[-1].macs > 0
