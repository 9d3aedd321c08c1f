# Helpers shared by the rules (plain Python over the validated config: no torch at parse time).

import re

import layerprobe.config.datasets
import layerprobe.config.resources


# Where a figure's files go, by what it is of (layerprobe.kinds.Figure.over), and the names it is drawn for.
FIGURE_FOLDERS = {"run": "{run}", "configuration": "configurations/{configuration}", "sweep": "sweeps/{sweep}"}
FIGURE_SUBJECTS = {"run": RUNS, "configuration": CONFIGURATIONS, "sweep": SWEEPS}


def figure_stem(fig):
    """results/figures/<folder>/<pattern>, with the wildcards of both."""
    return f"results/figures/{FIGURE_FOLDERS[fig.over]}/{fig.pattern}"


def figures(fig):
    """The PNG and PDF of figure `fig` (a layerprobe.kinds.Figure) for every subject and wildcard value."""
    return expand(
        f"{figure_stem(fig)}.{{ext}}", **{fig.over: FIGURE_SUBJECTS[fig.over]}, ext=["png", "pdf"], **fig.values(PROBES)
    )


def figure_subject(fig, wildcards):
    """What the figure is drawn of: the run's name, {"name", "runs"} of a configuration, or the sweep."""
    name = wildcards[fig.over]
    if fig.over == "run":
        return name
    if fig.over == "configuration":
        return {"name": name, "runs": CONFIGURATIONS[name]}
    return SWEEPS[name]


def probed_run(name):
    """The run's settings a probe job depends on: all but its configuration's name, a label for aggregation."""
    return {key: value for key, value in RUNS[name].items() if key != "configuration"}


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
