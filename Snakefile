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
PROBES = config["probes"]
SPLITS = PROBES["splits"]
MEASURES = ["l2", "linf", "l2_rel_init"]
# What a probe job depends on, and nothing more, so that editing e.g. the criticality feasibility
# (applied by aggregate) or the categories (unless they pick the joint robust set) reruns no probe.
PROBE_SETTINGS = layerprobe.config.probe_job_settings(PROBES)
PROBE_CATEGORIES = config["categories"] if PROBES["joint"]["enabled"] and PROBES["joint"]["robust"] else None
# The fused operators (rules/ops.smk): probes depend on the built library unless engine.ops is off.
import layerprobe.ops

OPS_LIBRARY = str(layerprobe.ops.LIBRARY)
OPS_SOURCES = layerprobe.ops.SOURCES
# auto uses them for CUDA probes only (on a CPU PyTorch is as fast), and builds them only where a
# toolchain is at hand: without one the workflow runs on PyTorch.
OPS_MODE = layerprobe.ops.mode(config["engine"]["ops"])
USE_OPS = OPS_MODE == "on" or (OPS_MODE == "auto" and layerprobe.ops.toolchain_missing() is None
                               and layerprobe.config.job_gpus("auto", config["engine"]["device"]) > 0)


report: "report/workflow.rst"


wildcard_constraints:
    run="|".join(RUNS),
    dataset="[A-Za-z0-9_-]+",
    split="test|train",
    measure="|".join(MEASURES),


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/ops.smk"
include: "rules/probe.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    input:
        rules.aggregate.output,
        figures("robustness_{split}", PROBES["reinit"]["enabled"] or PROBES["rerandomize"]["enabled"], split=SPLITS),
        figures("distance_{measure}", measure=MEASURES),
        figures("interpolation_{split}", PROBES["interpolate"]["enabled"], split=SPLITS),
        figures("criticality", PROBES["criticality"]["enabled"]),
        figures("joint_{split}", PROBES["joint"]["enabled"], split=SPLITS),
    default_target: True
