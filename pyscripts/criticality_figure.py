"""Rule `criticality_figure`: one run's criticality grids, one panel per unit (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import figures, tables

table = tables.read_csv(snakemake.input[0], tables.CRITICALITY)
figure = figures.criticality_grid(table, snakemake.wildcards.run)
figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
