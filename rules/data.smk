# Datasets as tensors, written once; every run on the dataset reads the same file.


rule data:
    output:
        "results/data/{dataset}.pt",
    params:
        settings=lambda wildcards: config["datasets"][wildcards.dataset],
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=config["resources"]["data"]["runtime"],
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/prepare_data.py"
