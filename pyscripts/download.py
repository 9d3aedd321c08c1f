"""Rule `download`: one declared file, from its first mirror that serves the declared SHA-256."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe.data import download

entry = snakemake.config["datasets"][snakemake.wildcards.dataset]["files"][snakemake.wildcards.file]
path = download.fetch(entry["urls"], snakemake.params.sha256, snakemake.output[0])
print(f"{path}: SHA-256 {snakemake.params.sha256} verified")
