"""Rule `fetch_revision`: one revision of a Hugging Face model repository, its files verified against the
hub's published hashes, the marker written last (snakemake object in scope)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

import logging
import warnings
from pathlib import Path

from layerprobe.config import released
from layerprobe.data import hub

logging.captureWarnings(True)  # the pickled-weights warning goes to the log
warnings.simplefilter("always")
w = snakemake.wildcards
repo = f"{w.owner}/{w.name}"
info = hub.fetch_revision(
    repo,
    w.revision,
    Path(snakemake.output[0]).parent,
    allow_pickle=snakemake.params.allow_pickle,
    endpoint=released.hub_endpoint(snakemake.config["runs"], repo),
)
print(f"{repo}@{w.revision} (commit {info['commit']}): {len(info['files'])} files verified")
for name, digest in info["files"].items():
    print(f"  {name}  {digest}")
