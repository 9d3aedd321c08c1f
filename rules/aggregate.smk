# All runs' tables concatenated, the probe kinds' own tables (the criticality grid), and the per-unit
# summary with categories. Quick and light: it runs where Snakemake runs, not as a cluster job.


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
    params:
        categories=config["categories"],
        settings=layerprobe.kinds.aggregate_settings(PROBES),
    log:
        "logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/aggregate.py"
