"""The workflow's configuration: validated against the JSON Schema, defaults filled, cross-checked.

Only yaml and jsonschema are needed here (no torch), so the Snakefile validates a config, plans its
jobs and decides what to build at parse time, and `snakemake -n` works where torch is not installed.
Errors name the key (e.g. `runs[0].train.lr`) and what is allowed, and are raised before any work.

Modules: `schema` (the JSON Schema, defaults, key paths, --config strings), `checks` (validate: the
schema then the cross-checks), `datasets` and `recipes` (the built-in declarations and named recipes,
and how a config's own lay over them), `values` (grids, sizes, epochs read from settings),
`resources` (what a job asks of the machine), `merge`, `configurations` (the runs that differ only in
seed) and `sweeps` (configurations along axes of capacity).
"""

from layerprobe.config.checks import SPLITS, validate
from layerprobe.config.schema import SCHEMA, ConfigError, section
from layerprobe.config.values import alpha_grid, checkpoint_epochs, parse_bytes, sigma_grid

__all__ = [
    "SCHEMA",
    "SPLITS",
    "ConfigError",
    "alpha_grid",
    "checkpoint_epochs",
    "parse_bytes",
    "section",
    "sigma_grid",
    "validate",
]
