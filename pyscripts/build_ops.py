"""Rule `build_ops`: compile csrc/ into the shared library probe jobs load (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe.probing.ops import build

print(f"compiling {', '.join(str(s) for s in build.sources())}")
build.build_ops(snakemake.output[0], verbose=True)
print(f"built {snakemake.output[0]}")
