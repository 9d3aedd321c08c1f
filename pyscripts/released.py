"""Rule `released`: a released run's manifest of checkpoints, one per revision (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import warnings

from layerprobe.training import released

warnings.simplefilter("always")  # revisions holding identical weights are reported in the log
run = snakemake.wildcards.run
manifest = released.write_manifest(snakemake.params.released, snakemake.output.manifest, run)
print(f"{run}: {manifest['model_type']}, {len(manifest['checkpoints'])} revisions")
for entry in manifest["checkpoints"]:
    print(f"  step {entry['epoch']}: {entry['revision']} ({entry['folder']})")
