# Released checkpoints (runs with `released`, e.g. Pythia's step0 ... step143000): each revision's files
# fetched once from the Hugging Face hub, verified against the hub's published hashes, then the run's
# manifest, which the probe reads as it reads a trained run's. Fetching is a local rule: on a cluster
# it runs on the submit host (compute nodes often have no internet). A run on a local folder fetches nothing.


rule fetch_revision:
    localrule: True
    output:
        f"{HUB_FOLDER}/{{owner}}/{{name}}/{{revision}}/{HUB_MARKER}",
    wildcard_constraints:
        owner="[A-Za-z0-9][A-Za-z0-9_.-]*",
        name="[A-Za-z0-9][A-Za-z0-9_.-]*",
        revision="[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        # What shapes the files: the repository and revision (the wildcards) and whether pickled weights
        # are accepted. The hub's address does not (the hashes do): the script reads it from the config,
        # so editing it fetches nothing again.
        allow_pickle=lambda wildcards: layerprobe.config.released.allow_pickle(
            config["runs"], f"{wildcards.owner}/{wildcards.name}"
        ),
    log:
        "logs/fetch/{owner}/{name}/{revision}.log",
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/fetch_revision.py"


rule released:
    localrule: True  # reads and hashes files; no training
    wildcard_constraints:
        run=runs_matching(RELEASED),
    input:
        revisions=lambda wildcards: released_markers(RUNS[wildcards.run]["released"]),
    output:
        manifest="results/runs/{run}/checkpoints/manifest.json",
    params:
        released=lambda wildcards: released_settings(RUNS[wildcards.run]["released"]),
    log:
        "logs/released/{run}.log",
    conda:
        "../envs/layerprobe.yaml"
    script:
        "../pyscripts/released.py"
