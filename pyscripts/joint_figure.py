"""Rule `joint_figure`: one run's heatmap for sets of units reset together (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import figures, tables

table = tables.read_csv(snakemake.input[0], tables.ROBUSTNESS)
figure = figures.joint_heatmap(table, snakemake.wildcards.run, snakemake.wildcards.split)
figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
