"""Rule `merge_shards`: a sharded run's tables, from its shards' rows (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import torch

from layerprobe import shards, study
from layerprobe.data import dataset
from layerprobe.results import tables

torch.set_num_threads(snakemake.params.torch_threads)
run = snakemake.params.run
data = dataset.load(snakemake.input.data)
parts = [tables.read_csv(path, shards.ORDER + tables.ROBUSTNESS) for path in snakemake.input.parts]
factory, states, num_classes, unit_rule = study.load_run(run, snakemake.input.manifest, data)
results = study.merge_run(
    factory, states, parts, snakemake.params.probes, study.run_columns(run), num_classes, unit_rule=unit_rule
)
for name, table in results.items():
    tables.write_csv(table, snakemake.output[name])
print(f"{run['name']}: {len(results['robustness'])} rows from {len(parts)} shards")
