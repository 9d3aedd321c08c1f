"""Rule `robustness_figure`: one run's error heatmap for one split (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import figures, tables

table = tables.read_csv(snakemake.input[0], tables.ROBUSTNESS)
figure = figures.robustness_heatmap(table, snakemake.wildcards.run, snakemake.wildcards.split)
figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
