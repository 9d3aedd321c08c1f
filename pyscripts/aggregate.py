"""Rule `aggregate`: concatenate the runs' tables, grade the criticality grid, summarize every unit (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from layerprobe import tables


def gather(paths, columns):
    return pd.concat([tables.read_csv(p, columns) for p in paths], ignore_index=True)


robustness = gather(snakemake.input.robustness, tables.ROBUSTNESS)
distances = gather(snakemake.input.distances, tables.DISTANCES)
inventory = gather(snakemake.input.inventory, tables.INVENTORY)
categories = snakemake.params.categories
criticality = tables.criticality(robustness, distances, **snakemake.params.feasibility)
units = tables.summarize_units(inventory, robustness, distances, categories["robust_max_increase"],
                               categories["critical_fraction"], criticality)
tables.write_csv(robustness, snakemake.output.robustness)
tables.write_csv(distances, snakemake.output.distances)
tables.write_csv(criticality, snakemake.output.criticality)
tables.write_csv(units, snakemake.output.units)
print(units[["run", "unit", "reinit_test_error", "rerandomize_test_error_mean", "category", "criticality"]].to_string())
