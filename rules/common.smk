# Helpers shared by the rules (plain Python over the validated config: no torch at parse time).

import re

import layerprobe.config.datasets
import layerprobe.config.released
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
    run = {key: value for key, value in RUNS[name].items() if key != "configuration"}
    if run.get("released"):  # the hub's address does not shape the checkpoints (their hashes do)
        run["released"] = released_settings(run["released"])
    return run


# The download and data rules' view of the dataset declarations.


def declared_file(wildcards):
    declaration = config["datasets"].get(wildcards.dataset, {})
    if wildcards.file not in layerprobe.config.datasets.file_roles(declaration):
        raise ValueError(f"dataset {wildcards.dataset!r} declares no file {wildcards.file!r}")
    return declaration["files"][wildcards.file]


def dataset_files(wildcards):
    declaration = config["datasets"][wildcards.dataset]
    roles = layerprobe.config.datasets.file_roles(declaration)
    files = {role: f"data/downloads/{wildcards.dataset}/{role}" for role in roles}
    tokenizer = layerprobe.config.datasets.model_tokenizer(declaration)
    if tokenizer and "repo" in tokenizer:  # a model's tokenizer: its revision fetched from the hub
        folder = layerprobe.config.released.revision_folder(tokenizer, tokenizer["revision"])
        files["tokenizer"] = str(folder / HUB_MARKER)
    return files


def gpus(rule, device):
    """GPUs a job of `rule` asks for (config `resources`); a profile's set-resources overrides it."""
    return layerprobe.config.resources.job_gpus(config["resources"][rule]["gpu"], device)


# The probe rules' view of the shards (layerprobe.shards).


def runs_matching(names):
    """A wildcard constraint matching exactly these run names (none: nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def shard_file(run, shard):
    return f"results/runs/{run}/probes/shards/{shard}.csv"


# The released runs' view of the hub (layerprobe.config.released; rules/released.smk).


def released_markers(released):
    """The fetched revisions' markers a released run's manifest needs; none for a local folder."""
    if released.get("folder"):
        return []
    return [str(layerprobe.config.released.revision_folder(released, r) / HUB_MARKER) for r in released["revisions"]]


def released_settings(released):
    """What shapes a released run's manifest: all but the hub's address."""
    return {key: value for key, value in released.items() if key != "endpoint"}
