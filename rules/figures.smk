# Figures, drawn from the aggregated tables alone, one rule per figure the probe kinds declare
# (layerprobe.kinds): {rule}_figure writes results/figures/{run}/{pattern}.png|pdf, or, for a figure of a
# configuration (runs across seeds) or of a sweep, results/figures/configurations/{configuration}/... and
# results/figures/sweeps/{sweep}/... The PNGs go into the report. Quick and light: they run where
# Snakemake runs, not as cluster jobs.

for fig in layerprobe.kinds.figures():

    rule:
        name:
            f"{fig.rule}_figure"
        localrule: True
        input:
            [f"results/tables/{name}.csv" for name in (fig.table, *fig.more)],
        output:
            png=report(
                f"{figure_stem(fig)}.png",
                caption=f"../report/{fig.caption}",
                category=fig.category,
                subcategory=f"{{{fig.over}}}",
                labels={fig.over: f"{{{fig.over}}}", "figure": fig.label},
            ),
            pdf=f"{figure_stem(fig)}.pdf",
        params:
            figure=fig.rule,
            categories=config["categories"] if fig.categories else None,
            # What the figure is of; its runs are a param, so a change of membership redraws it.
            subject=lambda wildcards, fig=fig: figure_subject(fig, wildcards),
        log:
            f"logs/figures/{FIGURE_FOLDERS[fig.over]}/{fig.pattern}.log",
        benchmark:
            f"results/benchmarks/figures/{FIGURE_FOLDERS[fig.over]}/{fig.pattern}.tsv"
        conda:
            "../envs/layerprobe.yaml"
        script:
            "../pyscripts/figure.py"
