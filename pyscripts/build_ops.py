"""Rule `build_ops`: compile csrc/ into the shared library probe jobs load (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import ops

print(f"compiling {', '.join(str(s) for s in ops.sources())}")
ops.build(snakemake.output[0], verbose=True)
print(f"built {snakemake.output[0]}")
