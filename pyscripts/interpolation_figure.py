"""Rule `interpolation_figure`: one run's error along each unit's interpolation (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import figures, tables

table = tables.read_csv(snakemake.input[0], tables.ROBUSTNESS)
figure = figures.interpolation_curves(table, snakemake.wildcards.run, snakemake.wildcards.split)
figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
