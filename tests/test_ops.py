"""The fused operators of csrc/ against their PyTorch references in layerprobe/probing/ops/reference.py.

The extension is built once per test run (session fixture `library`), into a temporary folder,
or loaded from the file LAYERPROBE_OPS_LIBRARY names (a library built beforehand, e.g. by
benchmarks/device_check.sh); tests that need it are skipped, with the reason, where no C++
compiler or ninja is found. The operator tests run on the CPU and, where torch sees a GPU and the
library has CUDA kernels, on the GPU too: inputs drawn on the CPU, the GPU's results compared with
the reference computed on the CPU from the same inputs.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerprobe.base.seeds import derive_seed
from layerprobe.config.resources import toolchain_missing
from layerprobe.config.values import ops_mode
from layerprobe.kinds import criticality, interpolate, reinit
from layerprobe.probing import compose, engine, ops, reference
from layerprobe.probing.noise import normal_noise, philox4x32_10, seeds_for
from layerprobe.probing.ops import build
from layerprobe.probing.ops import reference as unfused
from layerprobe.probing.variants import Variant

from conftest import REPO

DTYPES = [torch.float32, torch.float64]


def tolerance(dtype, inputs=33):
    """Of a product over `inputs` terms, computed in two different orders (the absolute rounding error
    grows with the length of the sums)."""
    scale = max(1.0, inputs / 33)
    return dict(rtol=1e-5, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12 * scale)


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    prebuilt = os.environ.get("LAYERPROBE_OPS_LIBRARY")
    if prebuilt:
        ops.load(prebuilt)  # fails (not skips) when the named file is missing: it was asked for
        return prebuilt
    missing = toolchain_missing()
    if missing:
        pytest.skip(f"the fused operators cannot be built here: {missing}")
    path = build.build_ops(tmp_path_factory.mktemp("ops") / "layerprobe_ops.so")
    ops.load(path)
    return path


@pytest.fixture(
    params=[
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
    ]
)
def device(request, library):
    """Where the operator runs: the CPU, and the GPU where torch sees one and the library has CUDA kernels."""
    if not ops.has_device(request.param):
        pytest.skip(f"the loaded library has no {request.param} kernels (built without CUDA)")
    return request.param


def on(device, *tensors):
    """The tensors (None kept) on `device`."""
    return tuple(None if t is None else t.to(device) for t in tensors)


def cpu(result):
    return tuple(t.cpu() for t in result) if isinstance(result, tuple) else result.cpu()


def generator(*parts):
    return torch.Generator().manual_seed(derive_seed("test_ops", *parts))


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


def test_philox_matches_the_published_known_answers():
    """Random123's known-answer vectors for philox4x32_10."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, expected in cases:
        assert tuple(int(v) for v in philox4x32_10(*counter, *key)) == expected


def kernel_noise(seed, stream, rows, cols, dtype, device="cpu"):
    """E as the compiled kernels draw it: x = I, W = 0, σ = 1 gives x (W + E)ᵀ = Eᵀ exactly."""
    eye = torch.eye(cols, dtype=dtype, device=device)
    return ops.noisy_unit(
        eye,
        torch.zeros(rows, cols, dtype=dtype, device=device),
        None,
        torch.ones(1, dtype=dtype, device=device),
        torch.tensor([seed], device=device),
        stream,
    )[0].T.cpu()


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_noise_is_the_reference_noise(device, dtype):
    for seed, stream, rows, cols in [(0, 0, 3, 1), (12345, 2, 7, 33), (2**40 + 7, 1, 64, 64), (9, 4, 300, 257)]:
        expected = normal_noise(seed, stream, rows, cols, dtype)
        actual = kernel_noise(seed, stream, rows, cols, dtype, device)
        if dtype == torch.float32:  # the float64 maths may differ in its last bits (libm, SLEEF, CUDA), not in float32
            assert torch.equal(actual, expected)
        else:  # CUDA's log / sin / cos are within 2 ulp, the CPU's within 1
            tol = 4e-16 if device == "cpu" else 4e-15
            torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_noise_is_standard_normal_and_independent(library):
    n_rows, n_cols, k = 200, 250, 4  # 50,000 draws per k
    draws = ops.noisy_unit(
        torch.eye(n_cols, dtype=torch.float64),
        torch.zeros(n_rows, n_cols, dtype=torch.float64),
        None,
        torch.ones(k, dtype=torch.float64),
        seeds_for(99, k),
    ).flatten(1)
    n = draws.shape[1]
    # mean ~ N(0, 1/n), variance ~ N(1, 2/n): 5 standard errors
    assert draws.mean(1).abs().max() < 5 / n**0.5
    assert (draws.var(1) - 1).abs().max() < 5 * (2 / n) ** 0.5
    correlation = torch.corrcoef(draws)
    off = correlation[~torch.eye(k, dtype=torch.bool)]
    assert off.abs().max() < 5 / n**0.5  # independent across k
    # neighbouring entries of a row and of a column are uncorrelated too
    grid = draws[0].view(n_cols, n_rows)
    assert abs(torch.corrcoef(torch.stack([grid[:, :-1].flatten(), grid[:, 1:].flatten()]))[0, 1]) < 5 / n**0.5
    # a Kolmogorov-Smirnov distance within the 0.1% critical value
    values = draws[0].sort().values
    cdf = 0.5 * (1 + torch.erf(values / 2**0.5))
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert torch.max(torch.maximum(steps - cdf, cdf - (steps - 1 / n))) < 1.95 / n**0.5


def test_same_seed_same_noise_other_seed_other_noise(library):
    a = kernel_noise(5, 0, 10, 11, torch.float32)
    assert torch.equal(a, kernel_noise(5, 0, 10, 11, torch.float32))
    assert not torch.isclose(a, kernel_noise(6, 0, 10, 11, torch.float32)).any()
    assert not torch.isclose(a, kernel_noise(5, 1, 10, 11, torch.float32)).any()  # another stream
    with pytest.raises(ValueError, match="seed must lie"):
        normal_noise(-1, 0, 2, 2)


def test_probe_noise_is_the_philox_noise():
    from layerprobe import models
    from layerprobe.models.units import inventory

    model = models.fcn((6,), 3, depth=1, width=5)
    units = inventory(model)
    final = model.state_dict()
    variant = Variant("criticality", "layer1", ("layer1",), ("checkpoint", 0), 77, 0.5, 0.1, 0)
    noise = compose.noise(variant, units, final)
    assert torch.equal(noise["layer1.linear.weight"], normal_noise(77, 0, 5, 6, torch.float32))
    assert torch.equal(noise["layer1.linear.bias"], normal_noise(77, 1, 5, 1, torch.float32).view(5))


# ---------------------------------------------------------------------------------------------
# The operators against their references
# ---------------------------------------------------------------------------------------------


def head_inputs(v, n, c, f, dtype, seed=0):
    """Random head inputs; the reference predictions equal the labels on about half the inputs, so
    that the `worse` count (reference right, variant wrong) is far from 0 for any number of classes."""
    g = generator("head", v, n, c, f, seed)
    labels = torch.randint(0, c, (n,), generator=g)
    return (
        torch.randn(v, n, f, generator=g, dtype=dtype),
        torch.randn(c, f, generator=g, dtype=dtype),
        torch.randn(c, generator=g, dtype=dtype),
        labels,
        torch.where(torch.rand(n, generator=g) < 0.5, labels, torch.randint(0, c, (n,), generator=g)),
    )


COUNTS = (0, 2, 3)  # correct, agree, worse; 1 is the loss


def assert_head_equal(actual, expected, dtype, device="cpu"):
    """Counts exactly and the loss to rounding; but float32 on the GPU against the CPU: cuBLAS and
    the CPU's GEMM round logits differently, which can flip a near-tie, so counts within 2 each."""
    assert len(actual) == len(expected) == 4
    assert all(actual[i].dtype == torch.int64 for i in COUNTS) and actual[1].dtype == torch.float64
    actual = cpu(actual)
    if device != "cpu" and dtype == torch.float32:
        assert all((actual[i] - expected[i]).abs().max(initial=0) <= 2 for i in COUNTS)
        torch.testing.assert_close(actual[1], expected[1], rtol=1e-5, atol=1e-6)
        return
    assert all(torch.equal(actual[i], expected[i]) for i in COUNTS)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-9 if dtype == torch.float64 else 1e-6, atol=1e-9)


# (V, N, C, F): C from 2 to 1,000; N below, at and above a tile. Tiles hold T = max(64, 2**18 / C)
# rows on the CPU, max(1024, 2**24 / C) on CUDA; where N ≤ T a tile is T // N whole variants, so
# several whole-variant tiles need V > T // N: (5, 100, 1000, 9) has 3 on the CPU (2 variants
# each, the last one short), (300, 1001, 2, 5) 3 on the CPU (130 each), (5, 3400, 1000, 8) 2 on
# CUDA (4 each; on the CPU it is rows of one variant per tile, like (2, 26215, 10, 4)).
HEAD_SIZES = [
    (1, 1, 2, 3),
    (3, 37, 10, 17),
    (7, 1001, 2, 5),
    (2, 300, 1000, 9),
    (2, 26215, 10, 4),
    (0, 5, 3, 2),
    (5, 100, 1000, 9),
    (40, 1001, 2, 5),
    (300, 1001, 2, 5),
    (5, 3400, 1000, 8),
]


def head_tiles(v, n, c, device):
    """How many tiles ops_impl.h's head_eval runs (the C++ constants, for the test of the sizes)."""
    t = max(64, 2**18 // c) if device == "cpu" else max(1024, 2**24 // c)
    return -(-v // (t // n)) if n <= t else v * -(-n // t)


def test_head_sizes_reach_several_whole_variant_tiles():
    assert head_tiles(5, 100, 1000, "cpu") == 3 and head_tiles(300, 1001, 2, "cpu") == 3
    assert head_tiles(5, 3400, 1000, "cuda") == 2 and head_tiles(2, 26215, 10, "cpu") == 4  # 2 per variant


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", HEAD_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_head_eval_equals_reference(device, dtype, size):
    inputs = head_inputs(*size, dtype)
    assert_head_equal(ops.head_eval(*on(device, *inputs)), unfused.head_eval_reference(*inputs), dtype, device)
    no_bias = (*inputs[:2], None, *inputs[3:])
    assert_head_equal(ops.head_eval(*on(device, *no_bias)), unfused.head_eval_reference(*no_bias), dtype, device)


@pytest.mark.parametrize("dtype", DTYPES)
def test_head_eval_breaks_ties_like_argmax(device, dtype):
    hidden, weight, bias, labels, ref = head_inputs(4, 50, 7, 5, dtype, seed=1)
    tied = (hidden, torch.zeros_like(weight), torch.zeros_like(bias), labels, ref)  # all logits equal
    assert_head_equal(ops.head_eval(*on(device, *tied)), unfused.head_eval_reference(*tied), dtype)  # exactly: all 0
    assert ops.head_eval(*on(device, *tied))[0].tolist() == [int((labels == 0).sum())] * 4  # argmax picks class 0
    assert ops.head_eval(*on(device, *tied))[3].tolist() == [int(((labels == ref) & (labels != 0)).sum())] * 4
    twins = weight.clone()
    twins[3], twins[5] = twins[1], twins[1]  # classes 1, 3 and 5 tie wherever class 1 wins
    partly = (hidden, twins, torch.zeros_like(bias), labels, ref)
    assert_head_equal(ops.head_eval(*on(device, *partly)), unfused.head_eval_reference(*partly), dtype, device)


def test_head_eval_rejects_bad_input(device):
    hidden, weight, bias, labels, ref = on(device, *head_inputs(2, 9, 4, 3, torch.float32))
    for bad in (labels.clone().fill_(4), labels.clone().fill_(-1)):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            ops.head_eval(hidden, weight, bias, bad, ref)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            unfused.head_eval_reference(hidden, weight, bias, bad, ref)
    with pytest.raises(ValueError, match="x has 3 features but weight expects 5"):
        ops.head_eval(hidden, torch.zeros(4, 5, device=device), None, labels, ref)
    with pytest.raises(ValueError, match=r"labels must have shape \(9\)"):
        ops.head_eval(hidden, weight, bias, labels[:5], ref)
    with pytest.raises(ValueError, match="weight must be Float like the other inputs"):
        ops.head_eval(hidden, weight.double(), None, labels, ref)


def linear_inputs(b, i, o, dtype, seed=0):
    g = generator("linear", b, i, o, seed)
    return (
        torch.randn(b, i, generator=g, dtype=dtype),
        torch.randn(o, i, generator=g, dtype=dtype),
        torch.randn(o, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,i,o,k", [(1, 1, 1, 1), (13, 7, 5, 11), (100, 33, 65, 3), (4, 6, 3, 0), (300, 130, 257, 21)])
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_interp_unit_equals_reference(device, dtype, b, i, o, k, activation):
    x, w0, b0 = linear_inputs(b, i, o, dtype)
    _, w1, b1 = linear_inputs(b, i, o, dtype, seed=1)
    alphas = torch.rand(k, generator=generator("alphas", k), dtype=dtype)
    for biases in ((b0, b1), (None, None)):
        actual = ops.interp_unit(*on(device, x, w0, biases[0], w1, biases[1], alphas), activation)
        assert actual.shape == (k, b, o) and actual.device.type == device
        torch.testing.assert_close(
            actual.cpu(),
            unfused.interp_unit_reference(x, w0, biases[0], w1, biases[1], alphas, activation),
            **tolerance(dtype, i),
        )
    with pytest.raises(ValueError, match="activation must be 'none' or 'relu'"):
        ops.interp_unit(*on(device, x, w0, b0, w1, b1, alphas), "tanh")
    with pytest.raises(ValueError, match="give both biases or neither"):
        ops.interp_unit(*on(device, x, w0, b0, w1, None, alphas), "none")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,i,o,k", [(1, 1, 1, 1), (13, 7, 5, 6), (50, 33, 65, 3), (3, 4, 2, 0), (64, 129, 300, 4)])
def test_noisy_unit_equals_reference(device, dtype, b, i, o, k):
    x, w, bias = linear_inputs(b, i, o, dtype)
    g = generator("sigmas", k)
    sigmas = torch.rand(k, generator=g, dtype=dtype)
    seeds = torch.randint(0, 2**62, (k,), generator=g)
    for bias_ in (bias, None):
        actual = ops.noisy_unit(*on(device, x, w, bias_, sigmas, seeds), 3)
        assert actual.shape == (k, b, o) and actual.device.type == device
        torch.testing.assert_close(
            actual.cpu(), unfused.noisy_unit_reference(x, w, bias_, sigmas, seeds, 3), **tolerance(dtype, i)
        )
    if device != "cpu":  # the engine passes the seeds from the host
        torch.testing.assert_close(
            ops.noisy_unit(*on(device, x, w, bias, sigmas), seeds, 3).cpu(),
            unfused.noisy_unit_reference(x, w, bias, sigmas, seeds, 3),
            **tolerance(dtype, i),
        )
    with pytest.raises(ValueError, match=rf"seeds must have shape \({k}\)"):
        ops.noisy_unit(*on(device, x, w, bias, sigmas, seeds[:0] if k else torch.zeros(1, dtype=torch.int64)), 0)


def test_opcheck(device):
    """Schemas, fake kernels and dispatch are consistent (torch.library.opcheck) for every operator."""
    hidden, weight, bias, labels, ref = head_inputs(3, 21, 5, 4, torch.float32)
    x, w0, b0 = linear_inputs(6, 4, 3, torch.float64)
    _, w1, b1 = linear_inputs(6, 4, 3, torch.float64, seed=1)
    alphas = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    samples = [
        (torch.ops.layerprobe.head_eval.default, (hidden, weight, bias, labels, ref)),
        (torch.ops.layerprobe.head_eval.default, (hidden.double(), weight.double(), None, labels, ref)),
        (torch.ops.layerprobe.interp_unit.default, (x, w0, b0, w1, b1, alphas, "relu")),
        (
            torch.ops.layerprobe.interp_unit.default,
            (x.float(), w0.float(), None, w1.float(), None, alphas.float(), "none"),
        ),
        (torch.ops.layerprobe.noisy_unit.default, (x, w0, b0, alphas, torch.tensor([1, 2, 3]), 0)),
        (
            torch.ops.layerprobe.noisy_unit.default,
            (x.float(), w0.float(), None, alphas.float(), torch.tensor([4, 5, 6]), 2),
        ),
    ]
    for op, args in samples:
        torch.library.opcheck(op, tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args))


# ---------------------------------------------------------------------------------------------
# The engine with the operators on and off
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def counted(library, monkeypatch):
    """Counts the engine's calls of each operator, to check the fused paths really ran."""
    calls = dict.fromkeys(ops.OPS, 0)
    for name in ops.OPS:
        original = getattr(ops, name)

        def wrapper(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(ops, name, wrapper)
    return calls


@pytest.mark.parametrize("name", ["fcn", "vgg_bn"])
def test_engine_results_equal_with_ops_on_and_off(counted, name):
    from test_engine import assert_same_rows, every_probe, setting

    model, units, checkpoints, source, splits = setting(name)
    variants = every_probe(units)
    off = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu")
    on = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu", ops=True)
    assert_same_rows(off, on, loss_rel=1e-12)
    assert_same_rows(reference.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source"), on)
    assert counted["head_eval"] > 0
    if name == "fcn":  # its units open with a Linear: the α grid and the noise run fused
        assert counted["interp_unit"] > 0 and counted["noisy_unit"] > 0


def test_engine_in_float32_with_ops_matches_within_one_prediction(counted):
    from test_engine import assert_same_rows, setting

    model, units, checkpoints, source, splits = setting("fcn", torch.float32)
    seeds = {(u.name, 0, 0): derive_seed("f32", u.name) for u in units}
    variants = (
        reinit.describe(units, [0, 1])
        + interpolate.describe(units, [0.0, 0.5, 1.0])
        + criticality.describe(units, [0.5], [0.1], seeds)
    )
    off = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu")
    on = engine.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu", ops=True)
    assert_same_rows(off, on, loss_rel=1e-4, error_slack=1 / 41)


def test_ops_must_be_loaded_for_the_engine(library):
    from test_engine import setting

    model, units, checkpoints, source, splits = setting("fcn")
    if not torch.cuda.is_available():  # asking for CUDA where there is none is named first
        with pytest.raises(RuntimeError, match="device 'cuda' asked for, but this machine has no CUDA device"):
            engine.evaluate(
                model,
                units,
                reinit.describe(units, [0]),
                checkpoints[5],
                source,
                splits,
                "same_source",
                device="cuda",
                ops=True,
            )
    assert ops.resolve("off") is False and ops.resolve(True) is True and ops.resolve("on", device="cpu") is True
    assert ops.resolve("auto", device="cpu") is False  # on a CPU, auto keeps the (as fast) PyTorch path
    with pytest.raises(ValueError, match="engine.ops must be one of"):
        ops.resolve("maybe")


def test_mode_reads_yaml_booleans_and_names_the_choices():
    assert [ops_mode(v) for v in ("auto", "on", "off", True, False)] == ["auto", "on", "off", "on", "off"]
    for bad in ("maybe", "ON", None, 1, 0):
        with pytest.raises(ValueError, match="engine.ops must be one of"):
            ops_mode(bad)


class Tanh(torch.nn.Linear):
    """A Linear subclass with its own forward: the engine must not run it as a plain Linear."""

    def forward(self, x):
        return torch.nn.functional.linear(x, torch.tanh(self.weight), self.bias)


def test_engine_runs_a_linear_subclass_by_its_own_forward(counted):
    from test_engine import assert_same_rows, every_probe, setting

    model, units, checkpoints, source, splits = setting("fcn")
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = Tanh
    variants = every_probe(units)
    expected = reference.evaluate(model, units, variants, checkpoints[5], source, splits, "same_source")
    for fused in (False, True):
        actual = engine.evaluate(
            model, units, variants, checkpoints[5], source, splits, "same_source", device="cpu", ops=fused
        )
        assert_same_rows(expected, actual)
    assert counted == dict.fromkeys(ops.OPS, 0)  # nothing fused: every layer is a Tanh


def test_resolve_without_a_library(tmp_path):
    """In a fresh process (nothing loaded): auto falls back, on names the missing file and the rule."""
    code = (
        "import sys; from layerprobe.probing import ops\n"
        "assert ops.resolve('auto', sys.argv[1]) is False and ops.resolve('off') is False\n"
        "try:\n    ops.resolve('on', sys.argv[1])\nexcept ops.OpsUnavailable as err:\n    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "missing.so")],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PYTHONPATH": os.pathsep.join(  # the caller's too: wheels may lie there
                str(p) for p in [REPO, os.environ.get("PYTHONPATH")] if p
            ),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "missing.so do not exist" in result.stdout and "build_ops" in result.stdout


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def test_arch_list_from_torchs_own_architectures():
    assert build.arch_list(["sm_80", "sm_90", "sm_90a", "compute_90", "sm_100", "sm_120"]) == "8.0;9.0;9.0a;10.0;12.0"
    assert build.arch_list(["compute_90"]) == build.arch_list([]) == build.FALLBACK_ARCHS == "8.0;9.0"


def fake_build(monkeypatch, tmp_path, *, cuda_version, gpus, arch_env=None, cuda=...):
    """ops.build with cpp_extension.load replaced: what it was given, TORCH_CUDA_ARCH_LIST and
    cpp_extension.CUDA_HOME then. With a CUDA torch, the toolkit is a fake one (`fake_toolkit`) whose
    headers are complete, found behind an nvcc wrapper on PATH. `cuda` is build_ops' (default: whether
    torch has CUDA)."""
    from torch.utils import cpp_extension

    seen = {}

    def load(**kwargs):
        seen.update(kwargs, arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST"), cuda_home=cpp_extension.CUDA_HOME)
        (Path(kwargs["build_directory"]) / "layerprobe_ops.so").write_bytes(b"")
        return None

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_86", "sm_90", "compute_90"])
    if arch_env is None:
        monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    else:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_env)
    monkeypatch.setattr(build, "register_fakes", lambda: None)
    if cuda_version is not None and not (tmp_path / "cuda-13.0").exists():
        isolate_cuda(monkeypatch, tmp_path, fake_toolkit(tmp_path / "cuda-13.0", headers=build.CUDA_HEADERS))
    before = cpp_extension.CUDA_HOME
    assert build.build_ops(tmp_path / "out.so", cuda=cuda_version is not None if cuda is ... else cuda).is_file()
    assert cpp_extension.CUDA_HOME == before  # set for the build only
    return seen


def test_build_without_a_visible_gpu_compiles_for_torchs_architectures(monkeypatch, tmp_path):
    seen = fake_build(monkeypatch, tmp_path, cuda_version="12.8", gpus=0)
    assert seen["arch_list"] == "8.6;9.0" and seen["with_cuda"] is True
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ  # set for the build only
    assert "-ffp-contract=off" in seen["extra_cflags"]
    assert fake_build(monkeypatch, tmp_path, cuda_version="12.8", gpus=0, arch_env="8.9")["arch_list"] == "8.9"
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.9"  # the user's own setting stays
    assert fake_build(monkeypatch, tmp_path, cuda_version="12.8", gpus=1)["arch_list"] is None  # from the card
    cpu_only = fake_build(monkeypatch, tmp_path, cuda_version=None, gpus=0)
    assert cpu_only["arch_list"] is None and cpu_only["with_cuda"] is False
    assert cpu_only["extra_cflags"] == ["-O3", "-ffp-contract=off"]  # the CPU build's flags, unchanged


# --- Finding the CUDA toolkit and the headers ----------------------------------------------------


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_toolkit(root: Path, *, headers=("cuda_runtime.h",), reports: str | None = "TOP") -> Path:
    """A CUDA toolkit's skeleton: include/ with `headers` (cuda_runtime.h always) and a bin/nvcc that,
    like the real one, prints its environment (_HERE_, TOP) to stderr under --dryrun; `reports`
    None: prints nothing, "_HERE_": that line alone."""
    for name in {"cuda_runtime.h", *headers}:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / name).write_text("")
    lines = {"TOP": [f"_HERE_={root}/bin", f"TOP={root}/bin/.."], "_HERE_": [f"_HERE_={root}/bin"], None: []}[reports]
    echo = "".join(f"echo '#$ {line}' >&2; " for line in lines)
    executable(
        root / "bin" / "nvcc",
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = --dryrun ] && {{ {echo}exit 0; }}; done\n'
        "echo 'Cuda compilation tools, release 13.0, V13.0.0'\n",
    )
    return root


def isolate_cuda(monkeypatch, tmp_path, toolkit: Path | None = None, *, wrapper=True, site_dirs=()):
    """An environment where nvcc on PATH is `toolkit`'s behind a wrapper script in tmp_path/wrap/bin
    (the trap: torch's guess, the folder above that bin/, is not the toolkit), or a link to it
    (`wrapper` False), or no nvcc at all (`toolkit` None); CUDA_HOME, CUDA_PATH unset;
    resources.DEFAULT_CUDA_HOME a folder that does not exist; sys.path = `site_dirs` (where
    nvidia_include_dirs looks)."""
    from torch.utils import cpp_extension  # noqa: F401 (imported before sys.path is replaced)

    from layerprobe.config import resources

    for variable in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(resources, "DEFAULT_CUDA_HOME", str(tmp_path / "no-such-cuda"))
    bin_dir = tmp_path / ("wrap" if wrapper else "links") / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir.parent / "include").mkdir(exist_ok=True)  # like /usr/local/include: no cuda_runtime.h
    (bin_dir / "nvcc").unlink(missing_ok=True)
    if toolkit is not None:
        if wrapper:
            executable(bin_dir / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
        else:
            (bin_dir / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    monkeypatch.setenv("PATH", str(bin_dir))  # nothing else: a system nvcc (/usr/bin/nvcc) stays out
    monkeypatch.setattr(sys, "path", [str(d) for d in site_dirs])
    return bin_dir


def fake_site(root: Path, layout: dict[str, tuple[str, ...]]) -> Path:
    """A site-packages folder with NVIDIA wheels: {"cu13": ("cublas_v2.h", ...)} gives nvidia/cu13/include/...;
    a package mapped to None gets only a lib/ folder."""
    for package, headers in layout.items():
        folder = root / "nvidia" / package / ("include" if headers is not None else "lib")
        folder.mkdir(parents=True, exist_ok=True)
        for name in headers or ():
            (folder / name).write_text("")
    return root


def test_cuda_home_is_found_behind_an_nvcc_wrapper_script(monkeypatch, tmp_path):
    from layerprobe.config import resources

    toolkit = fake_toolkit(tmp_path / "opt" / "cuda-13.0")
    wrapper = isolate_cuda(monkeypatch, tmp_path, toolkit)
    nvcc = shutil.which("nvcc")
    assert nvcc == str(wrapper / "nvcc")
    guess = Path(nvcc).parent.parent  # torch.utils.cpp_extension's guess: the trap this test sets
    assert guess == tmp_path / "wrap" and not resources.is_cuda_toolkit(guess)
    assert resources.toolkit_of(nvcc) == toolkit
    assert resources.find_cuda_home() == (toolkit, None) and resources.cuda_missing() is None


def test_cuda_home_through_a_link_and_from_here_alone(monkeypatch, tmp_path):
    from layerprobe.config import resources

    silent = fake_toolkit(tmp_path / "silent", reports=None)  # its nvcc says nothing: the link is resolved
    isolate_cuda(monkeypatch, tmp_path, silent, wrapper=False)
    assert resources.toolkit_of(shutil.which("nvcc")) is None
    assert resources.find_cuda_home() == (silent, None)
    here = fake_toolkit(tmp_path / "here", reports="_HERE_")
    assert resources.toolkit_of(here / "bin" / "nvcc") == here


def test_cuda_home_from_the_variables_as_given(monkeypatch, tmp_path):
    from layerprobe.config import resources

    toolkit = fake_toolkit(tmp_path / "cuda")
    isolate_cuda(monkeypatch, tmp_path)  # no nvcc on PATH
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    assert resources.find_cuda_home() == (toolkit, None)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "wrap"))  # wins over CUDA_PATH, and is not overridden
    home, why = resources.find_cuda_home()
    assert (
        home is None
        and why == f"CUDA_HOME={tmp_path / 'wrap'} is not a CUDA toolkit (it needs bin/nvcc and include/cuda_runtime.h)"
    )


def test_no_cuda_toolkit_names_what_is_missing(monkeypatch, tmp_path):
    from layerprobe.config import resources

    isolate_cuda(monkeypatch, tmp_path)
    assert resources.cuda_missing() == (
        "no CUDA toolkit: nvcc is not on PATH, CUDA_HOME and CUDA_PATH are unset, and "
        f"{tmp_path / 'no-such-cuda'} holds none"
    )
    monkeypatch.setattr(resources, "DEFAULT_CUDA_HOME", str(fake_toolkit(tmp_path / "usr-local-cuda")))
    assert resources.find_cuda_home() == (tmp_path / "usr-local-cuda", None)  # torch's last guess

    lost = fake_toolkit(tmp_path / "lost", reports=None)
    (lost / "include" / "cuda_runtime.h").unlink()  # an nvcc outside any toolkit, behind a wrapper
    isolate_cuda(monkeypatch, tmp_path, lost)
    why = resources.cuda_missing()
    assert why.startswith(f"no CUDA toolkit: the nvcc on PATH ({tmp_path / 'wrap' / 'bin' / 'nvcc'}) names no folder")
    assert why.endswith("set CUDA_HOME")


def test_nvidia_include_dirs_of_the_installed_wheels(monkeypatch, tmp_path):
    cu13 = fake_site(tmp_path / "site13", {"cu13": ("cublas_v2.h",), "nccl": ("nccl.h",), "cufile": None})
    cu12 = fake_site(tmp_path / "site12", {"cusparse": ("cusparse.h",), "cublas": ("cublas_v2.h",)})
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = [
        cu13 / "nvidia" / "cu13" / "include",
        cu13 / "nvidia" / "nccl" / "include",
        cu12 / "nvidia" / "cublas" / "include",
        cu12 / "nvidia" / "cusparse" / "include",
    ]
    assert build.nvidia_include_dirs([str(plain), str(cu13), str(cu12), str(cu13)]) == expected
    monkeypatch.setattr(sys, "path", [str(cu13), str(plain), str(cu12)])
    assert build.nvidia_include_dirs() == expected  # sys.path by default
    assert build.nvidia_include_dirs([str(plain)]) == []


def test_find_cuda_takes_the_headers_the_toolkit_lacks_from_the_wheels(monkeypatch, tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", headers=("cuda_runtime_api.h",))  # no cuBLAS, cuSPARSE, ...
    site = fake_site(tmp_path / "site", {"cu13": ("cusparse.h", "cublas_v2.h", "cublasLt.h", "cusolverDn.h")})
    isolate_cuda(monkeypatch, tmp_path, toolkit, site_dirs=[site])
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert build.find_cuda() == (toolkit, [site / "nvidia" / "cu13" / "include"], None) and build.cuda_buildable()
    (site / "nvidia" / "cu13" / "include" / "cusparse.h").unlink()
    home, wheels, missing = build.find_cuda()
    assert missing.startswith(f"no cusparse.h (which torch's CUDA headers include) in {toolkit / 'include'}")
    assert not build.cuda_buildable() and build.sources() == [build.CSRC / "ops.cpp"]
    monkeypatch.setattr(sys, "path", [])
    assert "no cusparse.h, cublas_v2.h, cublasLt.h, cusolverDn.h (which" in build.cuda_missing()
    isolate_cuda(monkeypatch, tmp_path)  # no toolkit at all
    assert build.cuda_missing().startswith("no CUDA toolkit: nvcc is not on PATH")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert build.cuda_missing() == f"torch {torch.__version__} is not a CUDA build"


def test_a_cuda_build_uses_the_toolkit_found_and_the_wheels_headers(monkeypatch, tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", headers=("cuda_runtime_api.h",))
    site = fake_site(tmp_path / "site", {"cu13": build.CUDA_HEADERS, "nccl": ("nccl.h",)})
    isolate_cuda(monkeypatch, tmp_path, toolkit, site_dirs=[site])
    seen = fake_build(monkeypatch, tmp_path, cuda_version="13.0", gpus=0, cuda=None)
    assert seen["with_cuda"] is True and seen["cuda_home"] == str(toolkit)
    assert [Path(s).name for s in seen["sources"]] == ["ops.cpp", "ops_cuda.cpp", "kernels.cu"]
    wheels = [str(site / "nvidia" / p / "include") for p in ("cu13", "nccl")]
    assert seen["extra_cflags"] == ["-O3", "-ffp-contract=off", "-idirafter", wheels[0], "-idirafter", wheels[1]]
    assert not any(wheels[0] in flag for flag in seen["extra_include_paths"] + seen["extra_cuda_cflags"])


def test_a_cuda_torch_without_the_headers_builds_the_cpu_operators_or_says_why(monkeypatch, tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")  # cuda_runtime.h alone
    isolate_cuda(monkeypatch, tmp_path, toolkit)
    with pytest.warns(
        UserWarning, match="building the fused operators without their CUDA kernels: no cuda_runtime_api.h"
    ):
        seen = fake_build(monkeypatch, tmp_path, cuda_version="13.0", gpus=0, cuda=None)
    assert seen["with_cuda"] is False and [Path(s).name for s in seen["sources"]] == ["ops.cpp"]
    assert seen["extra_cflags"] == ["-O3", "-ffp-contract=off"] and seen["arch_list"] is None
    with pytest.raises(
        RuntimeError, match=r"cannot build the CUDA kernels of the fused operators: no cuda_runtime_api\.h"
    ):
        fake_build(monkeypatch, tmp_path, cuda_version="13.0", gpus=0, cuda=True)


def test_auto_builds_the_operators_only_where_the_cuda_kernels_can_be(monkeypatch, tmp_path):
    from layerprobe.config import resources

    monkeypatch.setattr(resources, "toolchain_missing", lambda: None)  # a C++ compiler and ninja
    isolate_cuda(monkeypatch, tmp_path)  # no CUDA toolkit
    gpu = {"ops": "auto", "device": "cuda"}
    assert not resources.builds_ops(gpu)  # a library without CUDA kernels would go unused
    assert resources.builds_ops({"ops": "on", "device": "cuda"}) and resources.builds_ops(
        {"ops": "on", "device": "cpu"}
    )
    isolate_cuda(monkeypatch, tmp_path, fake_toolkit(tmp_path / "cuda-13.0"))
    assert resources.builds_ops(gpu) and not resources.builds_ops({"ops": "auto", "device": "cpu"})
    assert not resources.builds_ops({"ops": "off", "device": "cuda"})


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_the_machines_own_cuda_toolkit_is_found():
    from layerprobe.config import resources

    home, why = resources.find_cuda_home()
    assert why is None and resources.is_cuda_toolkit(home), why
    version = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "release" in version.stdout


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed: the CUDA kernels cannot be compiled")
def test_every_cu_file_compiles_with_nvcc(tmp_path):
    for source in sorted((REPO / "csrc").glob("*.cu")):
        result = subprocess.run(
            [
                "nvcc",
                "-c",
                "-arch=sm_90",
                "-I",
                str(REPO / "csrc"),
                str(source),
                "-o",
                str(tmp_path / (source.stem + ".o")),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr


def test_cuda_build_check_refuses_an_environment_inside_the_checkout(tmp_path):
    """benchmarks/cuda_build_check.sh (run by hand: it installs a CUDA torch) keeps its 5.5 GB
    environment out of the checkout, and ends with its one result line even when it stops early."""
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "cuda_build_check.sh"), str(REPO / "venv-cuda")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OUT": str(tmp_path / "out")},
    )
    assert result.returncode == 2 and result.stdout.splitlines()[-1] == "CUDA kernels registered: (none)"
    assert f"the environment {REPO / 'venv-cuda'} lies inside the checkout" in result.stderr
    assert not (REPO / "venv-cuda").exists() and not (tmp_path / "out").exists()


def test_cuda_sources_include_no_torch_headers():
    for source in [REPO / "csrc" / "kernels.cu", REPO / "csrc" / "kernels.h", REPO / "csrc" / "philox.h"]:
        text = source.read_text()
        assert "torch/" not in text and "ATen" not in text and "c10" not in text, source


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_workflow_builds_once_and_a_kernel_edit_reruns_build_and_probes(library, tmp_path):
    """The build rule runs once, the probe job loads its library, and a csrc edit reruns both."""
    import yaml

    tree = tmp_path / "repo"
    tree.mkdir()
    for name in ("Snakefile", "rules", "pyscripts", "layerprobe", "csrc", "envs", "report"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, tree / name)
    (tree / "schemas").mkdir()
    shutil.copy(REPO / "layerprobe" / "config" / "schema.yaml", tree / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["runs"] = config["runs"][:1]
    config.pop("sweeps")  # one run: nothing to sweep
    config["probes"] = {
        "rerandomize": {"enabled": False},
        "interpolate": {"alphas": 3},
        "criticality": {"enabled": False},
        "joint": {"enabled": False},
    }
    config["engine"] = {"ops": "on", "device": "cpu"}
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/runs/fcn/probes/robustness.csv"

    def snakemake(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(tree / "Snakefile"),
                "--directory",
                str(work),
                "--configfile",
                str(work / "config.yaml"),
                *args,
                target,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
        )

    result = snakemake("--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("rule build_ops:") == 1
    assert "fused operators on" in (work / "logs/probe/fcn.log").read_text()
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake("-n"))
    # Editing a kernel rebuilds the library and reruns the probe that loads it. (A bare `touch` does
    # not: Snakemake sees the content is unchanged.)
    with open(tree / "csrc" / "kernels.cu", "a") as source:
        source.write("// an edit\n")
    planned = (lambda r: r.stdout + r.stderr)(snakemake("-n"))
    assert "rule build_ops:" in planned and "rule probe:" in planned and "rule train:" not in planned
