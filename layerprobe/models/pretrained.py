"""Hugging Face models (GPT-NeoX/Pythia, GPT-2, Llama-style decoders such as OLMo, ViT) as unit chains.

`build(config)` makes a new Hugging Face model from its config (weights drawn by the architecture's own
`_init_weights`, from torch's global generator) and returns its modules, shared, as a `UnitChain`:
`embed`, `layer0` … `layer{L-1}`, `final_norm`, `head` (units="layers"), or with each layer split into
`layer{i}.attn` and `layer{i}.mlp` (units="sublayers"). The chain's units are the model's own modules,
wrapped only so that each takes one tensor and returns one: the wrappers make the positions (rotary
cos/sin from the model's own rotary module, or learned positions) and call the layers with no mask,
so SDPA attends causally (is_causal) exactly as the model's own forward does on unpadded sequences.

`load_state(folder, model)` reads a revision's weights through transformers' own loader (so its key
renames apply) and returns them under the chain's keys, matched by parameter identity.

transformers is imported inside the functions: `import layerprobe.models` works without it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from layerprobe.models.chain import UnitChain
from layerprobe.models.units import OWN_RULE

if TYPE_CHECKING:
    from transformers import PretrainedConfig

UNITS = ("layers", "sublayers")


@dataclass(frozen=True)
class Layout:
    """Where an architecture keeps its parts (module paths in the Hugging Face model)."""

    task: str  # "causal_lm" | "image_classification": the Auto class that builds and loads it
    embed: str  # token embedding (ViT: the whole embeddings module: patches, class token, positions)
    layers: str  # the list of decoder layers / encoder blocks
    final_norm: str
    head: str  # output projection (ViT: the classifier)
    attn: tuple[str, str]  # in a layer: (the attention's norm, the attention)
    mlp: tuple[str, str]  # in a layer: (the MLP's norm, the MLP)
    positions: str  # "rotary" (cos/sin per layer), "learned" (added to the tokens) or "inside" (ViT)
    rotary: str | None = None  # the rotary embedding module
    learned: str | None = None  # learned position embedding
    post_norm: bool = False  # norm after the sublayer (OLMo 2), not before it


_LLAMA = Layout(
    "causal_lm",
    "model.embed_tokens",
    "model.layers",
    "model.norm",
    "lm_head",
    ("input_layernorm", "self_attn"),
    ("post_attention_layernorm", "mlp"),
    "rotary",
    rotary="model.rotary_emb",
)

# The one registry: model_type → layout. OLMo and OLMo 2 are used only if transformers has them.
ARCHITECTURES: dict[str, Layout] = {
    "gpt_neox": Layout(
        "causal_lm",
        "gpt_neox.embed_in",
        "gpt_neox.layers",
        "gpt_neox.final_layer_norm",
        "lm_head",
        ("input_layernorm", "attention"),
        ("post_attention_layernorm", "mlp"),
        "rotary",
        rotary="gpt_neox.rotary_emb",
    ),
    "gpt2": Layout(
        "causal_lm",
        "transformer.wte",
        "transformer.h",
        "transformer.ln_f",
        "lm_head",
        ("ln_1", "attn"),
        ("ln_2", "mlp"),
        "learned",
        learned="transformer.wpe",
    ),
    "llama": _LLAMA,
    "olmo": _LLAMA,
    "olmo2": Layout(
        "causal_lm",
        "model.embed_tokens",
        "model.layers",
        "model.norm",
        "lm_head",
        ("post_attention_layernorm", "self_attn"),
        ("post_feedforward_layernorm", "mlp"),
        "rotary",
        rotary="model.rotary_emb",
        post_norm=True,
    ),
    "vit": Layout(
        "image_classification",
        "vit.embeddings",
        "vit.layers",
        "vit.layernorm",
        "classifier",
        ("layernorm_before", "attention"),
        ("layernorm_after", "mlp"),
        "inside",
    ),
}


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('Hugging Face models need transformers: pip install ".[hf]"') from e
    return transformers


def _supported() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return [t for t in ARCHITECTURES if t in CONFIG_MAPPING]


def _layout(config) -> Layout:
    model_type = getattr(config, "model_type", None)
    if model_type not in _supported():
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {', '.join(_supported())}")
    return ARCHITECTURES[model_type]


def load_config(folder) -> PretrainedConfig:
    """The revision folder's config (never remote code); an unsupported model_type is a ValueError."""
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    if config.model_type not in _supported():
        raise ValueError(
            f"{folder}: model_type {config.model_type!r} is not supported; supported: {', '.join(_supported())}"
        )
    return config


# --- wrappers: one tensor in, one tensor out ---------------------------------------------------------


def _hide(module: nn.Module, name: str, other: nn.Module | None) -> None:
    """Refer to a module without registering it: the rotary module is registered once, on the chain
    (outside every unit), so its buffers never join a unit and `.to()` still moves them."""
    object.__setattr__(module, name, other)


class _Positions:
    """The per-layer keyword arguments: the rotary (cos, sin) of positions 0 … T-1, as the model's own
    forward computes them (position_ids of shape (1, T)), or nothing."""

    rotary: nn.Module | None

    def extra(self, h: torch.Tensor) -> dict:
        if self.rotary is None:
            return {}
        positions = torch.arange(h.shape[-2], device=h.device).unsqueeze(0)
        return {"position_embeddings": self.rotary(h, position_ids=positions)}


class Embedding(nn.Module):
    """Token ids → token embeddings, plus learned positions (GPT-2's wpe) when the model has them."""

    def __init__(self, tokens: nn.Module, positions: nn.Module | None = None):
        super().__init__()
        self.tokens = tokens
        self.positions = positions

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(ids)
        if self.positions is not None:
            h = h + self.positions(torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0))
        return h


class Layer(nn.Module, _Positions):
    """One decoder layer or encoder block, run by its own forward (no mask: SDPA's is_causal)."""

    def __init__(self, block: nn.Module, rotary: nn.Module | None):
        super().__init__()
        self.block = block
        _hide(self, "rotary", rotary)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.block(h, attention_mask=None, **self.extra(h))
        return out[0] if isinstance(out, tuple) else out


class Sublayer(nn.Module, _Positions):
    """x + f(norm(x)), or x + norm(f(x)) for a post-norm model: the attention or the MLP of a layer,
    with the same residual the layer's own forward adds."""

    def __init__(self, norm: nn.Module, inner: nn.Module, rotary: nn.Module | None, attention: bool, post: bool):
        super().__init__()
        self.norm, self.inner = norm, inner
        self.attention, self.post = attention, post
        _hide(self, "rotary", rotary)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h if self.post else self.norm(h)
        out = self.inner(x, attention_mask=None, **self.extra(h)) if self.attention else self.inner(x)
        out = out[0] if isinstance(out, tuple) else out
        return h + (self.norm(out) if self.post else out)


class ClassToken(nn.Module):
    """The class token's hidden state (ViT's classifier reads only that)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, 0]


class Pretrained(UnitChain):
    """A UnitChain over a Hugging Face model's modules; `hf` is that model (unregistered: its modules are
    the units', so its own forward sees the chain's parameters)."""

    def __init__(self, units, hf: nn.Module, rotary: nn.Module | None):
        super().__init__(units)
        if rotary is not None:
            self.rotary = rotary  # registered outside every unit: moved by .to(), in no state dict
        _hide(self, "hf", hf)


class ParallelSublayers(nn.Module):
    """GPT-NeoX with parallel residual (x + attn(ln1(x)) + mlp(ln2(x))) split into sublayers: the two
    halves of a layer read the same input, so they cannot be a chain of one-tensor units. The model
    runs its layers whole, like units="layers", and its units come from a mapping (attribute
    `layerprobe_unit_rule`, which `layerprobe.models.units.inventory` uses when given no rule)."""

    def __init__(self, units, hf: nn.Module, rotary: nn.Module | None, rule: dict[str, list[str]]):
        super().__init__()
        self.order = tuple(name for name, _ in units)
        for name, module in units:
            self.add_module(name, module)
        if rotary is not None:
            self.rotary = rotary
        _hide(self, "hf", hf)
        setattr(self, OWN_RULE, rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        return x


# --- build --------------------------------------------------------------------------------------------


def _auto(transformers, layout: Layout):
    return {
        "causal_lm": transformers.AutoModelForCausalLM,
        "image_classification": transformers.AutoModelForImageClassification,
    }[layout.task]


def _untied(config):
    """A copy of the config with its input and output embeddings untied: a probe resets one unit's
    parameters, and a tied matrix would belong to both `embed` and `head` (resetting one would
    silently reset the other), so `head` owns a copy of its own."""
    config = copy.deepcopy(config)
    if getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
    if hasattr(config, "use_cache"):
        config.use_cache = False
    return config


def _check_units(units: str) -> None:
    if units not in UNITS:
        raise ValueError(f"units {units!r}: one of {', '.join(UNITS)}")


def build(config, units: str = "layers") -> nn.Module:
    """A new model of `config` (float32, eval mode), its weights drawn by the architecture's own
    initializer from torch's global generator: `fresh_state(lambda: build(config), seed)` re-randomizes."""
    _check_units(units)
    layout = _layout(config)
    transformers = _transformers()
    # SDPA always: the layers run with no mask and rely on its is_causal (eager would not mask).
    hf = _auto(transformers, layout).from_config(_untied(config), attn_implementation="sdpa", dtype=torch.float32)
    return _wrap(hf.eval(), layout, units)


def factory(config, units: str = "layers") -> Callable[[], nn.Module]:
    """A function building the model of `config` anew (weights from the global generator)."""
    return lambda: build(config, units)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _wrap(hf: nn.Module, layout: Layout, units: str) -> nn.Module:
    get = hf.get_submodule
    rotary = get(layout.rotary) if layout.rotary else None
    if layout.positions == "inside":
        embed = get(layout.embed)
    else:
        embed = Embedding(get(layout.embed), get(layout.learned) if layout.learned else None)
    blocks = list(get(layout.layers))
    norm, head = get(layout.final_norm), get(layout.head)
    leaf = layout.head.rpartition(".")[2]
    if layout.task == "image_classification":
        tail = [("final_norm", norm), ("head", nn.Sequential(OrderedDict(cls=ClassToken(), **{leaf: head})))]
    elif _has_params(norm):
        tail = [("final_norm", norm), ("head", nn.Sequential(OrderedDict({leaf: head})))]
    else:  # OLMo's norm has no parameters, so it is no unit: it runs as the head's first, parameter-free step
        tail = [("head", nn.Sequential(OrderedDict(final_norm=norm, **{leaf: head})))]
    parallel = getattr(hf.config, "use_parallel_residual", False)
    if units == "layers" or parallel:
        middle = [(f"layer{i}", Layer(block, rotary)) for i, block in enumerate(blocks)]
    else:
        middle = [
            (f"layer{i}.{part}", Sublayer(*_pair(block, names), rotary, part == "attn", layout.post_norm))
            for i, block in enumerate(blocks)
            for part, names in (("attn", layout.attn), ("mlp", layout.mlp))
        ]
    chain = [("embed", embed), *middle, *tail]
    if units == "sublayers" and parallel:
        rule = {"embed": ["embed"]}
        for i in range(len(blocks)):
            for part, names in (("attn", layout.attn), ("mlp", layout.mlp)):
                rule[f"layer{i}.{part}"] = [f"layer{i}.block.{n}" for n in names]
        rule.update({name: [name] for name, _ in tail})
        return ParallelSublayers(chain, hf, rotary, rule).eval()
    return Pretrained(chain, hf, rotary).eval()


def _pair(block: nn.Module, names: tuple[str, str]) -> tuple[nn.Module, nn.Module]:
    return block.get_submodule(names[0]), block.get_submodule(names[1])


def unit_names(config, units: str = "layers") -> list[str]:
    """The units `build(config, units)` has, in forward order (without building it)."""
    _check_units(units)
    layout = _layout(config)
    layers = config.num_hidden_layers
    if units == "layers":
        middle = [f"layer{i}" for i in range(layers)]
    else:
        middle = [f"layer{i}.{part}" for i in range(layers) for part in ("attn", "mlp")]
    # OLMo's LayerNorm has no parameters: no final_norm unit (see _wrap)
    norm = [] if config.model_type == "olmo" else ["final_norm"]
    del layout
    return ["embed", *middle, *norm, "head"]


def unit_rule(model: nn.Module) -> str | dict:
    """The rule `layerprobe.models.units.inventory` (and `layerprobe.probe(unit_rule=...)`) takes for
    a model of `build`: "unit chain", or the sublayers mapping of a parallel-residual model."""
    return getattr(model, OWN_RULE, "unit chain")


def hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model whose modules a model of `build` shares."""
    return model.hf


def hf_keys(model: nn.Module) -> dict[str, str]:
    """model's state-dict key → the Hugging Face model's key of the same tensor (by identity)."""
    ours = model.state_dict(keep_vars=True)
    theirs = {}
    for key, tensor in hf_model(model).state_dict(keep_vars=True).items():
        theirs.setdefault(id(tensor), key)
    missing = [k for k, t in ours.items() if id(t) not in theirs]
    if missing:
        raise ValueError(f"entries of the model that its Hugging Face model lacks: {missing}")
    return {k: theirs[id(t)] for k, t in ours.items()}


# --- weights ------------------------------------------------------------------------------------------


def _check_files(folder: Path, allow_pickle: bool) -> bool:
    """Whether the folder holds safetensors (read then, and only then); refuses what may not be read."""
    tensors = sorted(folder.glob("*.safetensors"))
    pickled = sorted([*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")])
    if not tensors:
        if pickled and not allow_pickle:
            raise ValueError(
                f"{pickled[0]}: only pickled weights in {folder}; unpickling can run code, so it needs "
                "allow_pickle=True (or convert them to safetensors)"
            )
        if not pickled:
            raise ValueError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")
        return False
    from safetensors import safe_open

    for file in tensors:
        try:  # the header must cover the file exactly: a truncated file fails here
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as e:  # safetensors raises its own error type
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from e
    return True


def load_state(folder, model: nn.Module, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The revision's weights as the state dict of `model` (a model of `build`): its keys, float32.

    transformers' own loader reads the folder (its key renames apply: old Pythia names the head
    `embed_out`); a tied checkpoint's head gets a copy of the embedding. Pickled weights are read
    only with `allow_pickle`; remote code never runs.
    """
    folder = Path(folder)
    config = load_config(folder)
    layout = _layout(config)
    safetensors = _check_files(folder, allow_pickle)
    transformers = _transformers()
    try:
        source, info = _auto(transformers, layout).from_pretrained(
            str(folder),
            use_safetensors=safetensors,
            dtype=torch.float32,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except OSError as e:
        raise ValueError(f"{folder}: the weights could not be read ({e})") from e
    theirs = source.state_dict()
    missing = set(info.get("missing_keys", ()))
    embed_key, head_key = f"{layout.embed}.weight", f"{layout.head}.weight"
    if missing == {head_key} and embed_key in theirs:  # a tied checkpoint stores the embedding only
        theirs[head_key] = theirs[embed_key]
        missing = set()
    if missing:
        raise ValueError(f"{folder}: the checkpoint lacks {sorted(missing)}")
    return {ours: theirs[key].detach().to(torch.float32).clone() for ours, key in hf_keys(model).items()}
