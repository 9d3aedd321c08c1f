# Helpers shared by the rules (plain Python over the validated config: no torch at parse time).

import re

import layerprobe.config.datasets
import layerprobe.config.resources


def figures(fig):
    """The PNG and PDF of figure `fig` (a layerprobe.kinds.Figure) for every run and wildcard value."""
    return expand(f"results/figures/{{run}}/{fig.pattern}.{{ext}}", run=RUNS, ext=["png", "pdf"], **fig.values(PROBES))


# The download and data rules' view of the dataset declarations.


def declared_file(wildcards):
    declaration = config["datasets"].get(wildcards.dataset, {})
    if wildcards.file not in layerprobe.config.datasets.file_roles(declaration):
        raise ValueError(f"dataset {wildcards.dataset!r} declares no file {wildcards.file!r}")
    return declaration["files"][wildcards.file]


def dataset_files(wildcards):
    roles = layerprobe.config.datasets.file_roles(config["datasets"][wildcards.dataset])
    return {role: f"data/downloads/{wildcards.dataset}/{role}" for role in roles}


def gpus(rule, device):
    """GPUs a job of `rule` asks for (config `resources`); a profile's set-resources overrides it."""
    return layerprobe.config.resources.job_gpus(config["resources"][rule]["gpu"], device)


# The probe rules' view of the shards (layerprobe.shards).


def runs_matching(names):
    """A wildcard constraint matching exactly these run names (none: nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def shard_file(run, shard):
    return f"results/runs/{run}/probes/shards/{shard}.csv"
