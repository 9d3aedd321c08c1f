"""The library face: probe one's own trained model without the workflow.

    import layerprobe
    layerprobe.units(model)                                  # what will be reset, and what not
    table = layerprobe.probe(model, {0: init_state, 30: final_state}, {"test": (x, y)})

`probe` returns the robustness table (the columns of robustness.csv) as a pandas DataFrame.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pandas as pd
import torch
from torch import nn

from layerprobe import config, study
from layerprobe.base.device import resolve_device
from layerprobe.models.units import inventory, skipped
from layerprobe.probing import ops as lp_ops
from layerprobe.results import tables
from layerprobe.validation import inputs

Data = Mapping[str, tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor]


def units(model: nn.Module, rule: str | dict | None = None) -> pd.DataFrame:
    """One row per unit (name, parameter names, size, the grouping rule), then one per thing no unit
    covers, with the reason in `skipped`. `rule` as in layerprobe.models.units.inventory."""
    found = inventory(model, rule)
    rows = [
        {
            "unit": u.name,
            "index": u.index,
            "n_params": u.n_params,
            "params": " ".join(u.params),
            "rule": u.rule,
            "skipped": "",
        }
        for u in found
    ]
    rows += [
        {
            "unit": name,
            "index": None,
            "n_params": 0,
            "params": "",
            "rule": found[0].rule if found else "",
            "skipped": reason,
        }
        for name, reason in skipped(model, found)
    ]
    return tables.frame(rows, ["unit", "index", "n_params", "params", "rule", "skipped"])


def probe(
    model: nn.Module | Callable[[], nn.Module],
    checkpoints: Mapping[int, Mapping[str, torch.Tensor]],
    data: Data,
    probes: dict | None = None,
    *,
    unit_rule: str | dict | None = None,
    joint_groups: dict | None = None,
    categories: dict | None = None,
    device: str = "auto",
    memory_budget: str = "2GB",
    seed: int = 0,
    name: str = "model",
    progress: bool = False,
    ops: str = "auto",
    ops_library: str | None = None,
    allow_nonfinite: bool = False,
) -> pd.DataFrame:
    """Every configured probe of a trained model, as the tidy robustness table.

    model: the architecture (its current weights are not used), or a factory building it fresh;
        re-randomization draws from the factory, or from the modules' own `reset_parameters`.
    checkpoints: epoch → state dict; epoch 0 (the initialization) and the final epoch are required.
    data: {split name: (inputs, labels)}, or one (inputs, labels) pair used as the "test" split.
    probes: the workflow's `probes` section (see schemas/config.schema.yaml); defaults fill the rest.
        Unless given, the probed splits are those of `data`, and criticality uses "train" if present.
    ops: the fused operators (engine.ops: auto | on | off), loaded from `ops_library` (a built
        layerprobe_ops.so) unless already loaded; auto uses them on a CUDA device only, when loadable.
    allow_nonfinite: probe checkpoints or inputs holding NaN or ±inf (with a warning) instead of refusing them.

    Everything is checked before any evaluation (layerprobe.validation.inputs): an InputError names the
    split, checkpoint or tensor that does not fit, and what was expected.
    """
    factory = model if not isinstance(model, nn.Module) else _redrawing(model)
    data = {"test": data} if isinstance(data, tuple) else data
    if not isinstance(data, Mapping) or not data:
        inputs.check_splits(data)  # names what is wrong (the split defaults below need a split)
    data = dict(data)
    settings = config.section("probes", _for_data(probes or {}, data))
    run = {"run": name, "dataset": "", "model": type(factory()).__name__, "seed": seed}
    results = study.probe_run(
        factory,
        dict(checkpoints) if isinstance(checkpoints, Mapping) else checkpoints,
        data,
        settings,
        run,
        None,  # the model's outputs
        categories=config.section("categories", categories),
        joint_groups=joint_groups,
        device=device,
        memory_budget=config.parse_bytes(memory_budget),
        unit_rule=unit_rule,
        progress=progress,
        ops=lp_ops.resolve(ops, ops_library, resolve_device(device)),
        allow_nonfinite=allow_nonfinite,
    )
    return results["robustness"]


def _for_data(probes: dict, data: dict) -> dict:
    """Default the splits to the data's own, so any split names work."""
    probes = copy.deepcopy(probes)
    probes.setdefault("splits", list(data))
    critical = probes.setdefault("criticality", {})
    critical.setdefault("split", "train" if "train" in data else next(iter(data)))
    return probes


def _redrawing(model: nn.Module) -> Callable[[], nn.Module]:
    """A factory of copies of `model` whose layers are re-drawn by their own `reset_parameters`."""

    def fresh() -> nn.Module:
        copy_ = copy.deepcopy(model)
        for module in copy_.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return copy_

    return fresh
