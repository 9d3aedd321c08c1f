"""The one validation pass: everything that can be checked without training, checked before it.

`settings` (no torch): a whole config — the schema, the cross-checks (layerprobe.config) and each
enabled probe kind's own check on every run, with the unit names the model settings imply — so a
misspelled unit fails `snakemake -n`, not a probe job hours later. The Snakefile enters here.

`inputs` (torch): what the library face and every probe job are handed — the model, the data splits
(sizes, labels, the model's input shape), the checkpoints (keys and shapes against the model, finite
values) — each error naming the split, checkpoint and tensor, raised before any evaluation.
"""
