"""Rule `train`: train one run, checkpointing the configured epochs (snakemake object in scope)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import torch

from layerprobe import models
from layerprobe.data import dataset
from layerprobe.results import tables
from layerprobe.training.loop import train

torch.set_num_threads(snakemake.params.torch_threads)  # fixed by config: it changes the bits
run = {**snakemake.params.run, "name": snakemake.wildcards.run}
data = dataset.load(snakemake.input.data)
log = train(
    models.factory(run["model"], data.input_shape, data.num_classes),
    data,
    run["train"],
    run["seed"],
    checkpoint_dir=Path(snakemake.output.manifest).parent,
    save_epochs=run["checkpoints"],
    meta={
        "run": run["name"],
        "model": run["model"],
        "dataset": run["dataset"],
        "torch_threads": snakemake.params.torch_threads,
    },
)
tables.write_csv(tables.frame(log, list(log[0])), snakemake.output.log)
