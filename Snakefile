# layerprobe workflow: data -> training with checkpoints -> probes -> tables -> figures and report.
# All logic lives in the layerprobe library; rules declare files and settings, pyscripts glue.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")

configfile: "config.yaml"


# The Snakefile and every script job (local, conda or cluster) use the library of this checkout,
# installed or not; the variable is set here, never required from the user.
sys.path.insert(0, workflow.basedir)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.getenv("PYTHONPATH")])))

import layerprobe.config

try:
    config.update(layerprobe.config.validate(config, Path(workflow.basedir, "schemas", "config.schema.yaml")))
except layerprobe.config.ConfigError as err:
    sys.exit(str(err))

RUNS = {run["name"]: run for run in config["runs"]}
SPLITS = config["probes"]["splits"]
MEASURES = ["l2", "linf", "l2_rel_init"]


report: "report/workflow.rst"


wildcard_constraints:
    run="|".join(RUNS),
    dataset="[A-Za-z0-9_-]+",
    split="test|train",
    measure="|".join(MEASURES),


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/probe.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    input:
        rules.aggregate.output,
        expand("results/figures/{run}/robustness_{split}.{ext}", run=RUNS, split=SPLITS, ext=["png", "pdf"]),
        expand("results/figures/{run}/distance_{measure}.{ext}", run=RUNS, measure=MEASURES, ext=["png", "pdf"]),
    default_target: True
