# All runs' tables concatenated, the probe kinds' own tables (the criticality grid), the per-unit
# summary with categories, its summary across each configuration's seeds, and the summary a person
# reads first (results/summary.rst, at the top of the report). Quick and light: it runs where
# Snakemake runs, not as a cluster job.


rule aggregate:
    localrule: True
    input:
        robustness=expand("results/runs/{run}/probes/robustness.csv", run=RUNS),
        distances=expand("results/runs/{run}/probes/distances.csv", run=RUNS),
        inventory=expand("results/runs/{run}/probes/inventory.csv", run=RUNS),
    output:
        robustness="results/tables/robustness.csv",
        distances="results/tables/distances.csv",
        **{table.name: f"results/tables/{table.name}.csv" for table in layerprobe.kinds.tables()},
        units=report(
            "results/tables/units.csv",
            caption="../report/units.rst",
            category="Tables",
        ),
        configurations=report(
            "results/tables/configurations.csv",
            caption="../report/configurations.rst",
            category="Tables",
        ),
        summary=report(
            "results/summary.rst",
            caption="../report/summary.rst",
            category="Tables",
        ),
    params:
        categories=config["categories"],
        settings=layerprobe.kinds.aggregate_settings(PROBES),
        configurations=CONFIGURATIONS,
    log:
        "logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/aggregate.py"
