"""benchmarks/engine.py end to end on tiny cases: every evaluator runs, the JSON has the table's fields,
and the engine's errors equal the loop's; benchmarks/train.py in its quick mode."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_engine", REPO / "benchmarks" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny sizes: threads would only add synchronization
    yield module
    torch.set_num_threads(threads)
    sys.modules.pop(spec.name, None)


def test_engine_benchmark_tiny_cases(bench, tmp_path):
    cpu = torch.device("cpu")
    cases = [
        bench.case_a(n=300, checkpoints=3, width=32, depth=2),  # reinit, FCN
        bench.case_b(n=300, grid=4, width=32, depth=2),  # α grid, FCN
        bench.case_c(n=60, checkpoints=2, size=8),
    ]  # reinit, conv + batch norm
    rate = bench.matmul_rate(cpu, repeats=1)
    results = [bench.measure(case, cpu, 64 * 2**20, rate) for case in cases]
    path = tmp_path / "engine.json"
    bench.write_json(results, path)
    rows = json.loads(path.read_text())

    assert [row["case"] for row in rows] == ["a", "b", "c"]
    assert [row["variants"] for row in rows] == [9, 12, 10]  # units × checkpoints or α, no fullmodel rows
    for row in rows:
        assert list(row) == list(bench.FIELDS)
        assert row["max_error_diff"] == 0
        timings = ("engine_s", "loop_s", "vmap_s", "floor_s", "speedup_vs_loop", "speedup_vs_vmap")
        assert all(row[k] > 0 for k in timings)
        assert row["peak_mb"] is None  # measured only in the memory case


def test_floor_counts_minimal_work(bench):
    """Layer shapes give the MACs; an α grid pays its layer twice, the suffix once per variant."""
    case = bench.case_b(n=10, grid=5, width=16, depth=1)  # layer1: 784→16, layer2: 16→10
    macs, _ = bench.profile(case)
    assert macs == [784 * 16, 16 * 10]
    per_input = sum(macs) + (2 * macs[0] + 5 * macs[1]) + 2 * macs[1]
    assert bench.minimal_macs(case) == 10 * per_input


def test_train_benchmark_quick_runs(tmp_path):
    """benchmarks/train.py --quick: both loops train, one row each per model, with the speedup."""
    import subprocess

    path = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train.py"), "--quick", "--threads", "1", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(path.read_text())
    assert [(row["model"], row["loop"]) for row in rows] == [
        ("vgg", "layerprobe"),
        ("vgg", "dataloader"),
        ("fcn", "layerprobe"),
        ("fcn", "dataloader"),
    ]
    assert all(row["samples_per_s"] > 0 for row in rows) and rows[0]["speedup"] > 0
    assert "speedup" in result.stdout
