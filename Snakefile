# layerprobe workflow: data -> training with checkpoints (or released ones) -> probes -> tables -> figures and report.
# All logic lives in the layerprobe library; rules declare files and settings, pyscripts glue.
# Parsing needs only what Snakemake itself brings (yaml, jsonschema): `snakemake -n` and --lint work
# where torch is not installed, and a --use-conda driver needs no more than Snakemake.
import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")


# The Snakefile and every script job (local, conda or cluster) use the library of this checkout,
# installed or not; the variable is set here, never required from the user.
sys.path.insert(0, workflow.basedir)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.getenv("PYTHONPATH")])))

import layerprobe.config
import layerprobe.config.files
import layerprobe.config.configurations
import layerprobe.config.released
import layerprobe.config.resources
import layerprobe.config.sweeps
import layerprobe.kinds
import layerprobe.shards
import layerprobe.validation.settings

# A config file is complete on its own: keys it omits take the schema's defaults. The embedded
# default runs when no --configfile is given; --config key=value overrides whichever is in use.
# Each file is read strictly first (layerprobe.config.files: one line naming the file and line, and a
# key given twice is an error); Snakemake reads a --configfile itself before this file runs.
try:
    for path in workflow.overwrite_configfiles or ["config.yaml"]:  # the directive below: the working folder
        layerprobe.config.files.load(path)
except layerprobe.config.ConfigError as err:
    sys.exit(str(err))
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    # Everything that needs no training is checked here, unit names included (layerprobe.validation).
    # Nested --config values arrive as strings: they are read by the types the schema wants.
    config.update(layerprobe.validation.settings.validated(config, given=dict(workflow.config_settings.config)))
except layerprobe.config.ConfigError as err:
    sys.exit(str(err))

RUNS = {run["name"]: run for run in config["runs"]}
# Runs probed on the checkpoints a training released (rules/released.smk); the others are trained here.
RELEASED = [name for name, run in RUNS.items() if run.get("released")]
TRAINED = [name for name in RUNS if name not in RELEASED]
HUB_FOLDER, HUB_MARKER = layerprobe.config.released.HUB_FOLDER, layerprobe.config.released.MARKER
# Runs that differ only in seed, {configuration: run names}, and the sweeps over them (F5-F7).
CONFIGURATIONS = layerprobe.config.configurations.group(config["runs"])
SWEEPS = layerprobe.config.sweeps.resolve(config)
PROBES = config["probes"]
# Runs whose probe work is split into several jobs (resources.probe.shards / shard_macs), by shard name.
SHARDS = {name: {s.name: s for s in plan} for name, plan in
          ((name, layerprobe.shards.plan(run, config)) for name, run in RUNS.items()) if plan}
FIGURES = layerprobe.kinds.figures(PROBES)  # those of the enabled probe kinds, and the distances
# The fused operators (rules/ops.smk): built once, for probes on a GPU (or engine.ops: on).
OPS_LIBRARY = "results/ops/layerprobe_ops.so"
USE_OPS = layerprobe.config.resources.builds_ops(config["engine"])


report: "report/workflow.rst"


wildcard_constraints:
    run="|".join(RUNS),
    configuration="|".join(map(re.escape, CONFIGURATIONS)),
    sweep="|".join(map(re.escape, SWEEPS)) or "(?!)",
    dataset="[A-Za-z0-9_-]+",
    split="test|train",
    measure="|".join(layerprobe.kinds.DISTANCE_FIGURE.values(PROBES)["measure"]),


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/released.smk"
include: "rules/ops.smk"
include: "rules/probe.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    input:
        rules.aggregate.output,
        [figures(fig) for fig in FIGURES],
    default_target: True
