"""Rule `aggregate`: concatenate the runs' tables, make the probe kinds' tables, summarize every unit, and
each configuration across its seeds (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from layerprobe import aggregate
from layerprobe.base.atomic import atomic_path
from layerprobe.results import across_seeds, summary, tables


def gather(paths, columns):
    return pd.concat([tables.read_csv(p, columns) for p in paths], ignore_index=True)


robustness = gather(snakemake.input.robustness, tables.ROBUSTNESS)
distances = gather(snakemake.input.distances, tables.DISTANCES)
inventory = gather(snakemake.input.inventory, tables.INVENTORY)
settings = snakemake.params.settings
own = aggregate.kind_tables(robustness, distances, settings)
units = aggregate.summarize_units(inventory, robustness, distances, snakemake.params.categories, settings, own)
configurations = across_seeds.configurations_table(units, snakemake.params.configurations)
written = {"robustness": robustness, "distances": distances, **own, "units": units, "configurations": configurations}
for name, table in written.items():
    tables.write_csv(table, snakemake.output[name])
with atomic_path(snakemake.output.summary) as tmp:
    tmp.write_text(summary.render(configurations, units), encoding="utf-8")
print(units[["run", "unit", "reinit_test_error", "rerandomize_test_error_mean", "category", "criticality"]].to_string())
