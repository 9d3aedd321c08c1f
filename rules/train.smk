# Training with checkpoints. The manifest is written last, so it marks a complete run; the
# checkpoint files themselves are not declared outputs, so a failed (e.g. diverged) job keeps the
# epochs it saved for inspection instead of Snakemake deleting them. A killed job, run again, continues
# from the resume state the training keeps beside the checkpoints (layerprobe.training.loop).


rule train:
    wildcard_constraints:
        run=runs_matching(TRAINED),
    input:
        data=lambda wildcards: f"results/data/{RUNS[wildcards.run]['dataset']}.pt",
    output:
        manifest="results/runs/{run}/checkpoints/manifest.json",
        log="results/runs/{run}/train_log.csv",
    params:
        # Everything that shapes the trained weights: a change here retrains (params trigger).
        run=lambda wildcards: {key: RUNS[wildcards.run][key] for key in ("dataset", "seed", "model", "train", "checkpoints")},
        torch_threads=config["threads"],
    threads: config["threads"]
    resources:
        gpu=lambda wildcards: gpus("train", RUNS[wildcards.run]["train"]["device"]),
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=config["resources"]["train"]["runtime"],
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/train.py"
