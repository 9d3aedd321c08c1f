"""Rule `data`: prepare one dataset's tensors (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import datasets

splits = datasets.prepare(snakemake.wildcards.dataset, snakemake.params.settings)
datasets.save(splits, snakemake.output[0])
print(f"{splits.name}: train {tuple(splits.x_train.shape)}, test {tuple(splits.x_test.shape)}, "
      f"{splits.num_classes} classes")
