# Probes: every variant of one trained run evaluated by the engine, written as that run's tidy tables.
# A run with shards (resources.probe.shards, shard_macs) is probed by one probe_shard job per shard
# and put back together by merge_shards, whose tables equal the single job's bit for bit.

rule probe:
    wildcard_constraints:
        run=runs_matching([name for name in RUNS if name not in SHARDS]),
    input:
        data=lambda wildcards: f"results/data/{RUNS[wildcards.run]['dataset']}.pt",
        manifest=rules.train.output.manifest,
        ops=OPS_LIBRARY if USE_OPS else [],
    output:
        robustness="results/runs/{run}/probes/robustness.csv",
        distances="results/runs/{run}/probes/distances.csv",
        inventory="results/runs/{run}/probes/inventory.csv",
    params:
        run=lambda wildcards: probed_run(wildcards.run),
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


rule probe_shard:
    wildcard_constraints:
        run=runs_matching(SHARDS),
        shard="[A-Za-z0-9_.+-]+",
    input:
        data=lambda wildcards: f"results/data/{RUNS[wildcards.run]['dataset']}.pt",
        manifest=rules.train.output.manifest,
        ops=OPS_LIBRARY if USE_OPS else [],
        # The joint robust set comes from the re-initialization rows: the shards that make them come first.
        earlier=lambda wildcards: [
            shard_file(wildcards.run, other.name)
            for other in layerprobe.shards.reads(SHARDS[wildcards.run][wildcards.shard], SHARDS[wildcards.run].values())
        ],
    output:
        shard_file("{run}", "{shard}"),
    params:
        run=lambda wildcards: probed_run(wildcards.run),
        shard=lambda wildcards: SHARDS[wildcards.run][wildcards.shard].spec(),
        # Only its kinds' settings (and those they read): editing another kind reruns none of its shards.
        probes=lambda wildcards: layerprobe.shards.job_settings(SHARDS[wildcards.run][wildcards.shard], PROBES),
        categories=lambda wildcards: config["categories"]
        if any(layerprobe.kinds.get(k).uses_categories(PROBES[k]) for k in SHARDS[wildcards.run][wildcards.shard].kinds)
        else None,
        engine=config["engine"],
        torch_threads=config["threads"],
    threads: config["threads"]
    resources:
        gpu=gpus("probe", config["engine"]["device"]),
        mem_mb=config["resources"]["probe"]["mem_mb"],
        runtime=config["resources"]["probe"]["runtime"],
    log:
        "logs/probe/{run}/{shard}.log",
    benchmark:
        "results/benchmarks/probe/{run}/{shard}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/probe.py"


rule merge_shards:
    wildcard_constraints:
        run=runs_matching(SHARDS),
    input:
        manifest=rules.train.output.manifest,
        data=lambda wildcards: f"results/data/{RUNS[wildcards.run]['dataset']}.pt",
        parts=lambda wildcards: [shard_file(wildcards.run, name) for name in SHARDS[wildcards.run]],
    output:
        robustness="results/runs/{run}/probes/robustness.csv",
        distances="results/runs/{run}/probes/distances.csv",
        inventory="results/runs/{run}/probes/inventory.csv",
    params:
        run=lambda wildcards: probed_run(wildcards.run),
        probes=layerprobe.kinds.job_settings(PROBES),  # the order of the kinds' rows, and the draws
        torch_threads=config["threads"],
    threads: config["threads"]
    log:
        "logs/probe/{run}/merge.log",
    benchmark:
        "results/benchmarks/probe/{run}/merge.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/merge_shards.py"
