"""Rule `probe`: evaluate every probe variant of one trained run (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import torch

from layerprobe import checkpoints, datasets, engine as lp_engine, ops, study, tables
from layerprobe.config import model_factory, parse_bytes, run_columns

torch.set_num_threads(snakemake.params.torch_threads)  # fixed by config: it changes the bits
run, engine = snakemake.params.run, snakemake.params.engine
data = datasets.load(snakemake.input.data)
# engine.ops: load the library the build_ops rule made (never compile here); auto falls back to PyTorch.
fused = ops.resolve(engine["ops"], snakemake.input.get("ops") or None, lp_engine.resolve_device(engine["device"]))
print(f"engine.ops = {engine['ops']}: fused operators {'on' if fused else 'off'}")
results = study.probe_run(model_factory(run, data), checkpoints.load_all(snakemake.input.manifest),
                          {name: data.raw(name) for name in datasets.SPLITS}, snakemake.params.probes,
                          run_columns(run), data.num_classes, device=engine["device"],
                          memory_budget=parse_bytes(engine["memory_budget"]), categories=snakemake.params.categories,
                          joint_groups=run["joint_groups"], transform=data.normalize, ops=fused)
for name, table in results.items():
    tables.write_csv(table, snakemake.output[name])
