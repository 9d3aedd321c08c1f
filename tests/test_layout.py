"""The library's shape: imports point down the data flow, without circles, and the Snakefile parses without torch."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "layerprobe"
# The stages in the order of the data flow: a module imports only from its own stage or earlier ones.
STAGES = [
    "base",
    "config",
    "data",
    "models",
    "training",
    "probing",
    "results",
    "kinds",
    "shards",
    "validation",
    "study",
    "aggregate",
    "api",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The layerprobe modules `name` imports, anywhere in it (in functions too): `from pkg import x`
    counts as importing pkg.x when that is a module, else pkg."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
    return {m for m in found if m in MODULES and m != name}


def stage(name: str) -> int:
    parts = name.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 else len(STAGES)  # layerprobe/__init__: the face, on top


def test_no_import_circles():
    graph = {name: imports(name) for name in MODULES}
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circle = path[path.index(nxt) :] + [nxt]
                pytest.fail(f"import circle: {' -> '.join(circle)}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_imports_point_down_the_flow():
    upward = [
        f"{name} imports {other}" for name in MODULES for other in sorted(imports(name)) if stage(other) > stage(name)
    ]
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_the_circle_test_can_fail(tmp_path, monkeypatch):
    """A planted circle is found (so the test above would see one)."""
    for name, text in {"a": "from layerprobe.b import x\n", "b": "import layerprobe.a\nx = 1\n"}.items():
        (tmp_path / f"{name}.py").write_text(text)
    planted = {"layerprobe.a": tmp_path / "a.py", "layerprobe.b": tmp_path / "b.py"}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", planted)
    with pytest.raises(pytest.fail.Exception, match="import circle: layerprobe.a -> layerprobe.b -> layerprobe.a"):
        test_no_import_circles()


def test_training_and_descriptions_do_not_reach_into_later_stages():
    """The seams the re-layering cut: training needs no probing, variant descriptions no operator build,
    the fast path no reference evaluator, and the library no workflow paths."""
    assert not {
        m
        for m in MODULES
        if m.startswith("layerprobe.training")
        for i in imports(m)
        if i.startswith("layerprobe.probing")
    }
    assert not {i for i in imports("layerprobe.probing.variants") if i.startswith("layerprobe.probing.ops")}
    engine = [m for m in MODULES if m.startswith("layerprobe.probing.engine")]
    assert all("layerprobe.probing.reference" not in imports(m) for m in engine)
    for name in MODULES:
        quoted = [text for text in strings(name) if "results/" in text or "snakemake " in text]
        assert not quoted, f"{name} quotes the workflow's paths or commands: {quoted}"


def strings(name: str) -> list[str]:
    """The string constants of a module's code (docstrings left out)."""
    tree = ast.parse(MODULES[name].read_text())
    docs = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


# --- Parsing the workflow without torch ------------------------------------------------------------

BLOCKED = ("torch", "pandas", "matplotlib")


def environment_without(folder: Path, names) -> dict:
    """An environment in which `names` cannot be imported (stand-ins that raise ImportError)."""
    import os

    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked for this test')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory) -> dict:
    """torch cannot be imported (Snakemake's own plugins may need pandas, so that stays)."""
    return environment_without(tmp_path_factory.mktemp("blocked"), ["torch"])


@pytest.fixture(scope="module")
def without_heavy(tmp_path_factory) -> dict:
    return environment_without(tmp_path_factory.mktemp("blocked"), BLOCKED)


def test_the_stand_ins_do_block_torch(without_torch):
    result = subprocess.run([sys.executable, "-c", "import torch"], env=without_torch, capture_output=True, text=True)
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_the_workflow_modules_import_without_torch_pandas_or_matplotlib(without_heavy):
    code = (
        "import sys; import layerprobe.config, layerprobe.config.resources, layerprobe.kinds as k; k.figures(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=without_heavy, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
@pytest.mark.parametrize("config", ["config.yaml", ".test/config.yaml", "configs/paper-cifar10.yaml"])
def test_dry_run_and_lint_without_torch(without_torch, tmp_path, config):
    base = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / config),
    ]
    planned = subprocess.run(
        [*base, "--directory", str(tmp_path), "-n"], env=without_torch, capture_output=True, text=True, timeout=300
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "rule probe" in planned.stdout + planned.stderr  # probe, or probe_shard for a sharded config
    if config == "config.yaml":
        lint = subprocess.run(
            [*base, "--directory", str(REPO), "--lint"], env=without_torch, capture_output=True, text=True, timeout=300
        )
        assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
