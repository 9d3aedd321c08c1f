"""The conda environment of the rules lists what pyproject.toml lists (with the workflow extra's tools), same bounds."""

import re

import tomllib
import yaml

from layerprobe.results import tables

from conftest import REPO

CONDA_NAMES = {"matplotlib-base": "matplotlib"}  # conda-forge's name for the same library


def requirement(text: str) -> tuple[str, str]:
    name, bound = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", text).groups()
    return CONDA_NAMES.get(name, name).lower(), bound.replace(" ", "")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(requirement(r) for r in project["dependencies"])
    # ... and the workflow's own tools (the env runs rules, not Snakemake itself).
    # ... and the hf extra (rules fetch revisions and probe released checkpoints in the env).
    wanted |= dict(
        requirement(r)
        for r in project["optional-dependencies"]["workflow"] + project["optional-dependencies"]["hf"]
        if not r.startswith("snakemake")
    )
    env = yaml.safe_load((REPO / "envs" / "layerprobe.yaml").read_text())["dependencies"]
    conda = dict(requirement(d) for d in env if isinstance(d, str) and not d.startswith(("python", "pip")))
    pip = dict(requirement(d) for entry in env if isinstance(entry, dict) for d in entry["pip"])
    assert set(conda) | set(pip) == set(wanted)
    for name, bound in conda.items():
        assert bound == wanted[name], name
    pinned = pip["torch"].removeprefix("==")
    minimum = wanted["torch"].removeprefix(">=")
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, minimum.split(".")))


def test_readme_library_example_runs(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    example = readme.split("## Using the library")[1].split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    table = namespace["table"]
    assert list(table.columns) == tables.ROBUSTNESS
    assert set(table["probe"]) == {"reinit", "rerandomize", "interpolate", "criticality", "criticality_search", "joint"}
    assert namespace["reinit"]["error"].between(0, 1).all()
