# Datasets: each declared file is downloaded once and checked against its SHA-256 (rule download);
# rule data reads a dataset's files (or, for a folder dataset such as ImageNet, the user's folder)
# into one tensor file that every run on the dataset reads.


rule download:
    localrule: True  # on a cluster, from the submit host: compute nodes often have no internet
    output:
        "data/downloads/{dataset}/{file}",
    params:
        # Only the checksum shapes the file; the mirrors are read from the config by the script,
        # so editing URLs downloads nothing again.
        sha256=lambda wildcards: declared_file(wildcards)["sha256"].lower(),
    wildcard_constraints:
        file="[A-Za-z0-9_]+",
    log:
        "logs/download/{dataset}/{file}.log",
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/download.py"


rule data:
    input:
        unpack(dataset_files),
    output:
        "results/data/{dataset}.pt",
    params:
        settings=lambda wildcards: layerprobe.config.datasets.job_settings(config["datasets"][wildcards.dataset]),
    threads: config["threads"]  # decoding a folder dataset runs on this many processes
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
