# Figures, drawn from the aggregated tables alone, one rule per figure the probe kinds declare
# (layerprobe.kinds): {rule}_figure writes results/figures/{run}/{pattern}.png|pdf. The PNGs go into
# the report. Quick and light: they run where Snakemake runs, not as cluster jobs.

for fig in layerprobe.kinds.figures():

    rule:
        name:
            f"{fig.rule}_figure"
        localrule: True
        input:
            [f"results/tables/{name}.csv" for name in (fig.table, *fig.more)],
        output:
            png=report(
                f"results/figures/{{run}}/{fig.pattern}.png",
                caption=f"../report/{fig.caption}",
                category=fig.category,
                subcategory="{run}",
                labels={"run": "{run}", "figure": fig.label},
            ),
            pdf=f"results/figures/{{run}}/{fig.pattern}.pdf",
        params:
            figure=fig.rule,
            categories=config["categories"] if fig.categories else None,
        log:
            f"logs/figures/{{run}}/{fig.pattern}.log",
        benchmark:
            f"results/benchmarks/figures/{{run}}/{fig.pattern}.tsv"
        conda:
            "../envs/layerprobe.yaml"
        script:
            "../pyscripts/figure.py"
