"""Rules `probe` and `probe_shard`: evaluate a run's probe variants, all of them or one shard's
(snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import torch

from layerprobe import shards, study
from layerprobe.base.device import resolve_device
from layerprobe.config import SPLITS, parse_bytes
from layerprobe.data import dataset
from layerprobe.probing import ops
from layerprobe.results import tables

torch.set_num_threads(snakemake.params.torch_threads)  # fixed by config: it changes the bits
run, engine, shard = snakemake.params.run, snakemake.params.engine, snakemake.params.get("shard")
data = dataset.load(snakemake.input.data)
# engine.ops: load the library the build_ops rule made (never compile here); auto falls back to PyTorch.
fused = ops.resolve(engine["ops"], snakemake.input.get("ops") or None, resolve_device(engine["device"]))
print(
    f"engine.ops = {engine['ops']}: fused operators {'on' if fused else 'off'}"
    + (f"; shard {shard['name']}: kinds {shard['kinds']}" if shard else "")
)
# A shard of the joint probe reads the re-initialization rows its robust set comes from.
earlier = [
    row
    for path in snakemake.input.get("earlier", [])
    for row in tables.read_csv(path, shards.ORDER + tables.ROBUSTNESS).to_dict("records")
]
factory, states, num_classes, unit_rule = study.load_run(run, snakemake.input.manifest, data)
results = study.probe_run(
    factory,
    states,
    {name: data.raw(name) for name in SPLITS},
    snakemake.params.probes,
    study.run_columns(run),
    num_classes,
    unit_rule=unit_rule,
    device=engine["device"],
    memory_budget=parse_bytes(engine["memory_budget"]),
    categories=snakemake.params.categories,
    joint_groups=run["joint_groups"],
    transform=data.normalize,
    ops=fused,
    shard=shard,
    earlier=earlier,
)
if shard:
    tables.write_csv(results["robustness"], snakemake.output[0])
else:
    for name, table in results.items():
        tables.write_csv(table, snakemake.output[name])
