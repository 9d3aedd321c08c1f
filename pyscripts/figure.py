"""Rules `{figure}_figure`: one figure of a run, a configuration or a sweep, drawn from one aggregated table
(snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from layerprobe import aggregate, kinds
from layerprobe.results import figures, tables

figure = kinds.figure(snakemake.params.figure)
table, *more = [
    tables.read_csv(path, aggregate.columns_of(name))
    for path, name in zip(snakemake.input, (figure.table, *figure.more), strict=True)
]
wildcards = {key: value for key, value in snakemake.wildcards.items() if key != figure.over}
options = {"categories": snakemake.params.categories} if figure.categories else {}
figures.save_figure(
    figure.draw(table, snakemake.params.subject, *more, **wildcards, **options),
    snakemake.output.png,
    snakemake.output.pdf,
)
