"""Rule `data`: prepare one dataset's tensors (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe.data import dataset
from layerprobe.data.prepare import prepare

name = snakemake.wildcards.dataset  # a skipped image's warning goes to the log, naming the file
splits = prepare(
    name, snakemake.config["datasets"][name], files=dict(snakemake.input.items()), workers=snakemake.threads
)
dataset.save(splits, snakemake.output[0])
print(
    f"{splits.name}: train {tuple(splits.x_train.shape)}, test {tuple(splits.x_test.shape)}, "
    f"{splits.num_classes} classes, mean {splits.mean}, std {splits.std}"
)
