"""The download and data rules end to end: a user-declared idx dataset served from 127.0.0.1."""

import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from layerprobe.data import dataset

from conftest import REPO
from fakedata import Server, dead_url, idx_dataset, sha256

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def snakemake(folder, config, *args):
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def config_for(server, files, first_mirror=None):
    urls = {
        role: [*([first_mirror] if first_mirror else []), server.add(f"/{role}.gz", data)]
        for role, data in files.items()
    }
    return {
        "datasets": {
            "tiny": {
                "format": "idx",
                "num_classes": 4,
                "files": {role: {"urls": urls[role], "sha256": sha256(files[role])} for role in ROLES},
            }
        },
        "runs": [
            {
                "name": "r",
                "dataset": "tiny",
                "model": {"name": "fcn", "depth": 1, "width": 8},
                "train": {"epochs": 1, "lr_milestones": []},
                "checkpoints": [1],
            }
        ],
    }


def test_declared_dataset_is_downloaded_checked_and_prepared(tmp_path):
    files, arrays = idx_dataset()
    with Server() as server:
        config = config_for(server, files, first_mirror=dead_url())
        result = snakemake(tmp_path, config, "results/data/tiny.pt")
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(path for path, _ in server.requests) == sorted(f"/{role}.gz" for role in ROLES)

        data = dataset.load(tmp_path / "results/data/tiny.pt")
        assert torch.equal(data.x_test[:, 0], torch.from_numpy(arrays["test_images"])) and data.num_classes == 4
        for role in ROLES:
            assert (tmp_path / "data/downloads/tiny" / role).read_bytes() == files[role]
        assert "verified" in (tmp_path / "logs/download/tiny/train_images.log").read_text()

        # A new mirror changes no byte a checksum admits: nothing to do. A new checksum is a new file.
        moved = yaml.safe_load(yaml.safe_dump(config))
        moved["datasets"]["tiny"]["files"]["test_images"]["urls"].insert(0, "https://example.org/t10k.gz")
        assert "Nothing to be done" in snakemake(tmp_path, moved, "-n", "results/data/tiny.pt").stdout
        changed = yaml.safe_load(yaml.safe_dump(config))
        changed["datasets"]["tiny"]["files"]["test_images"]["sha256"] = "0" * 64
        plan = snakemake(tmp_path, changed, "-n", "results/data/tiny.pt").stdout
        assert "download" in plan and "data" in plan and "test_images" in plan


def test_checksum_mismatch_fails_the_download_naming_the_url(tmp_path):
    files, _ = idx_dataset()
    with Server() as server:
        config = config_for(server, files)
        config["datasets"]["tiny"]["files"]["train_labels"]["sha256"] = "ab" * 32
        result = snakemake(tmp_path, config, "results/data/tiny.pt")
    assert result.returncode != 0
    log = (tmp_path / "logs/download/tiny/train_labels.log").read_text()
    assert f"{server.url}/train_labels.gz: served a file whose SHA-256 is {sha256(files['train_labels'])}" in log
    assert not (tmp_path / "data/downloads/tiny/train_labels").exists()
    assert not (tmp_path / "results/data/tiny.pt").exists()
