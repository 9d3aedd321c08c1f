# Probes: every variant of one trained run evaluated by the engine, written as that run's tidy tables.


rule probe:
    input:
        data=lambda wildcards: f"results/data/{RUNS[wildcards.run]['dataset']}.pt",
        manifest=rules.train.output.manifest,
        ops=OPS_LIBRARY if USE_OPS else [],
    output:
        robustness="results/runs/{run}/probes/robustness.csv",
        distances="results/runs/{run}/probes/distances.csv",
        inventory="results/runs/{run}/probes/inventory.csv",
    params:
        run=lambda wildcards: RUNS[wildcards.run],
        # What the probe job depends on, and nothing more: editing e.g. the criticality feasibility
        # (applied by aggregate) or the categories (unless they pick the joint robust set) reruns no probe.
        probes=layerprobe.kinds.job_settings(PROBES),
        categories=config["categories"] if layerprobe.kinds.uses_categories(PROBES) else None,
        engine=config["engine"],
        torch_threads=config["threads"],
    threads: config["threads"]
    resources:
        gpu=gpus("probe", config["engine"]["device"]),
        mem_mb=config["resources"]["probe"]["mem_mb"],
        runtime=config["resources"]["probe"]["runtime"],
    log:
        "logs/probe/{run}.log",
    benchmark:
        "results/benchmarks/probe/{run}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/probe.py"
