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


@pytest.fixture
def launches(bench):
    return sys.modules["launches"]  # benchmarks/launches.py, imported by benchmarks/engine.py


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
        assert row["engine_launches_per_variant"] > 0 and row["loop_launches_per_variant"] > 0
        assert row["engine_syncs"] <= 2  # the tallies (counts, loss), read once


@pytest.mark.parametrize("letter", ["c", "d"])
def test_conv_cases_launch_a_third_of_the_loops_kernels(bench, launches, letter):
    """The issue's bar, at the --quick sizes: per variant, the engine dispatches at most a third of
    the compute operators the loop does, and reads the device once (syncs: the two tallies, the
    counts and the loss)."""
    case = bench.CASES[letter](**bench.QUICK[letter])
    budget = bench.MEMORY_CASES.get(letter, 2048 * 2**20)
    engine, rows = launches.count(lambda: bench.run_engine(case, torch.device("cpu"), budget))
    loop, baseline = launches.count(lambda: bench.run_loop(case))
    assert bench.max_error_diff(rows, baseline) == 0
    assert engine.launches <= loop.launches / 3, (engine.launches / len(case.variants), engine.operators)
    assert engine.syncs == 2


def test_no_host_sync_per_batch(bench, launches):
    """More batches (a smaller budget) launch more kernels but wait for the device no more often."""
    case = bench.case_c(n=600, checkpoints=2, size=16)
    cpu = torch.device("cpu")
    few, _ = launches.count(lambda: bench.run_engine(case, cpu, 2048 * 2**20))
    many, _ = launches.count(lambda: bench.run_engine(case, cpu, 64 * 2**20))
    assert many.launches > few.launches  # the small budget did split the work
    assert many.syncs == few.syncs == 2


def test_launch_counter_counts_kernels_not_views(launches):
    x = torch.randn(4, 6)
    counts, _ = launches.count(lambda: (x.view(6, 4).t().unsqueeze(0).expand(2, 4, 6) + 1).relu().sum().item())
    assert counts.launches == 3  # add, relu, sum; the views (view, t, unsqueeze, expand) launch nothing
    assert counts.syncs == 1
    copied, _ = launches.count(lambda: x.t().reshape(-1))
    assert copied.launches == 1  # a reshape that must copy does launch
    meta, _ = launches.count(lambda: torch.empty(3, device="meta") * 2)
    assert meta.launches == 0


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
