"""Rule `merge_shards`: a sharded run's tables, from its shards' rows (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import torch

from layerprobe import models, shards, study
from layerprobe.data import dataset
from layerprobe.results import tables
from layerprobe.training import checkpoints

torch.set_num_threads(snakemake.params.torch_threads)
run = snakemake.params.run
data = dataset.load(snakemake.input.data)
parts = [tables.read_csv(path, shards.ORDER + tables.ROBUSTNESS) for path in snakemake.input.parts]
results = study.merge_run(
    models.factory(run["model"], data.input_shape, data.num_classes),
    checkpoints.load_all(snakemake.input.manifest),
    parts,
    snakemake.params.probes,
    study.run_columns(run),
    data.num_classes,
)
for name, table in results.items():
    tables.write_csv(table, snakemake.output[name])
print(f"{run['name']}: {len(results['robustness'])} rows from {len(parts)} shards")
