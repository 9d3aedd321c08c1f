"""Rules `{figure}_figure`: one figure of a run, a configuration or a sweep, drawn from one aggregated table
(snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import aggregate, kinds
from layerprobe.results import figures, tables

figure = kinds.figure(snakemake.params.figure)
table = tables.read_csv(snakemake.input[0], aggregate.columns_of(figure.table))
wildcards = {key: value for key, value in snakemake.wildcards.items() if key != figure.over}
figures.save_figure(
    figure.draw(table, snakemake.params.subject, **wildcards), snakemake.output.png, snakemake.output.pdf
)
