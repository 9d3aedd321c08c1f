# All runs' tables concatenated, the criticality grid, and the per-unit summary with categories.


rule aggregate:
    input:
        robustness=expand("results/runs/{run}/probes/robustness.csv", run=RUNS),
        distances=expand("results/runs/{run}/probes/distances.csv", run=RUNS),
        inventory=expand("results/runs/{run}/probes/inventory.csv", run=RUNS),
    output:
        robustness="results/tables/robustness.csv",
        distances="results/tables/distances.csv",
        criticality="results/tables/criticality.csv",
        units=report(
            "results/tables/units.csv",
            caption="../report/units.rst",
            category="Tables",
        ),
    params:
        categories=config["categories"],
        feasibility=config["probes"]["criticality"]["feasibility"],
    log:
        "logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/aggregate.py"
