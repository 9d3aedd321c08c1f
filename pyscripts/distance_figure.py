"""Rule `distance_figure`: one run's distance-to-initialization heatmap (snakemake object in scope)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import figures, tables

table = tables.read_csv(snakemake.input[0], tables.DISTANCES)
figure = figures.distance_heatmap(table, snakemake.wildcards.run, snakemake.wildcards.measure)
figures.save_figure(figure, snakemake.output.png, snakemake.output.pdf)
