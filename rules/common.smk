# Helpers shared by the rules.

import layerprobe.datasets


def figures(name, enabled=True, **wildcards):
    """The PNG and PDF of figure `name` (a pattern) for every run; none when its probe is disabled."""
    if not enabled:
        return []
    return expand(f"results/figures/{{run}}/{name}.{{ext}}", run=RUNS, ext=["png", "pdf"], **wildcards)


# The download and data rules' view of the dataset declarations.


def declared_file(wildcards):
    declaration = config["datasets"].get(wildcards.dataset, {})
    if wildcards.file not in layerprobe.datasets.file_roles(declaration):
        raise ValueError(f"dataset {wildcards.dataset!r} declares no file {wildcards.file!r}")
    return declaration["files"][wildcards.file]


def dataset_files(wildcards):
    roles = layerprobe.datasets.file_roles(config["datasets"][wildcards.dataset])
    return {role: f"data/downloads/{wildcards.dataset}/{role}" for role in roles}


def gpus(rule, device):
    """GPUs a job of `rule` asks for (config `resources`); a profile's set-resources overrides it."""
    return layerprobe.config.job_gpus(config["resources"][rule]["gpu"], device)
