"""Rule `aggregate`: concatenate the runs' tables, make the probe kinds' tables, summarize every unit
(snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from layerprobe import aggregate
from layerprobe.results import tables


def gather(paths, columns):
    return pd.concat([tables.read_csv(p, columns) for p in paths], ignore_index=True)


robustness = gather(snakemake.input.robustness, tables.ROBUSTNESS)
distances = gather(snakemake.input.distances, tables.DISTANCES)
inventory = gather(snakemake.input.inventory, tables.INVENTORY)
settings = snakemake.params.settings
own = aggregate.kind_tables(robustness, distances, settings)
units = aggregate.summarize_units(inventory, robustness, distances, snakemake.params.categories, settings, own)
for name, table in {"robustness": robustness, "distances": distances, **own, "units": units}.items():
    tables.write_csv(table, snakemake.output[name])
print(units[["run", "unit", "reinit_test_error", "rerandomize_test_error_mean", "category", "criticality"]].to_string())
