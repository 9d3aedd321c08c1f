"""The Python face of csrc/: building and loading the fused operators, and a plain PyTorch
reference of each one.

The compiled library registers three operators under torch.ops.layerprobe (CPU kernels always,
CUDA kernels when it was built against a CUDA build of torch):

  head_eval(hidden (V, N, F), weight (C, F), bias (C)?, labels (N), reference (N))
      → correct (V) int64, loss (V) float64 (summed cross-entropy), agree (V) int64
  interp_unit(x (B, I), weight0, bias0?, weight1, bias1?, alphas (K), activation "none" | "relu")
      → (K, B, O): act(x W0ᵀ + b0 + α_k ((x W1ᵀ + b1) − (x W0ᵀ + b0)))
  noisy_unit(x (B, I), weight (O, I), bias (O)?, sigmas (K), seeds (K) int64, stream)
      → (K, B, O): x (W + σ_k E_k)ᵀ + b, E_k = normal_noise(seeds[k], stream, O, I)

The functions of the same names below are their references: unfused, obviously correct, and
what the tests compare the kernels with. `normal_noise` is layerprobe's one definition of
criticality noise (probes.noise draws from it): Philox4x32-10 with Box-Muller, bit for bit the
generator of csrc/philox.h, so the reference, the engine with or without the operators, and CPU
and GPU runs all perturb with the same numbers.

The library is an accelerator, never a requirement: `build` compiles it (the workflow's rule
build_ops does, once), `load` loads a built one, and `resolve` turns the config's engine.ops
(auto | on | off) into a yes or no for the engine.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCES = ("philox.h", "ops_impl.h", "ops.cpp", "kernels.h", "kernels.cu", "ops_cuda.cpp")
LIBRARY = Path("results/ops/layerprobe_ops.so")  # where the workflow's build_ops rule puts it
MODES = ("auto", "on", "off")
OPS = ("head_eval", "interp_unit", "noisy_unit")


class OpsUnavailable(RuntimeError):
    """engine.ops is "on" but the compiled library is missing or cannot serve the device."""


# ---------------------------------------------------------------------------------------------
# Philox4x32-10 and Box-Muller: the reference generator (csrc/philox.h is the compiled one)
# ---------------------------------------------------------------------------------------------

_MASK = 0xFFFFFFFF
_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox4x32_10(c0, c1, c2, c3, k0, k1) -> tuple[torch.Tensor, ...]:
    """Philox4x32 with 10 rounds; counter words and key words are int64 tensors (or ints) holding
    uint32 values, broadcast together. int64 products wrap modulo 2**64, which keeps the low 64 bits
    of the 32×32-bit product exact: hi and lo are read from them with shifts and masks."""
    c0, c1, c2, c3, k0, k1 = (torch.as_tensor(v, dtype=torch.int64) for v in (c0, c1, c2, c3, k0, k1))
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        p0, p1 = c0 * _M0, c2 * _M1
        hi0, lo0, hi1, lo1 = (p0 >> 32) & _MASK, p0 & _MASK, (p1 >> 32) & _MASK, p1 & _MASK
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def normal_noise(seed: int, stream: int, rows: int, cols: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(rows, cols) standard normals: entry (r, c) from Philox keyed by (seed, stream, r, c).

    Key = (seed mod 2**32, seed >> 32); counter = (c // 2, r, stream, 0); the first two words give
    the normals of columns c // 2 · 2 (cos) and + 1 (sin) by Box-Muller, computed in float64.
    """
    if not 0 <= seed < 2**64 or not 0 <= stream < 2**32:
        raise ValueError(f"normal_noise: seed must lie in [0, 2**64) and stream in [0, 2**32), got {seed}, {stream}")
    pairs = (cols + 1) // 2
    seed = seed - 2**64 if seed >= 2**63 else seed  # as int64, the bits the C++ reads
    v0, v1, _, _ = philox4x32_10(torch.arange(pairs).view(1, -1), torch.arange(rows).view(-1, 1), stream, 0,
                                 seed & _MASK, (seed >> 32) & _MASK)
    u1 = (v0.double() + 1.0) * 2.0**-32  # (0, 1]: the log stays finite
    u2 = v1.double() * 2.0**-32
    radius, angle = torch.sqrt(-2.0 * torch.log(u1)), (2 * math.pi) * u2
    pair = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=2)  # (rows, pairs, 2)
    return pair.view(rows, 2 * pairs)[:, :cols].to(dtype).contiguous()


def seeds_for(seed: int, k: int) -> torch.Tensor:
    """The per-draw keys of `noisy_unit` for one seed and K draws: (seed, k) as the key's two words."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    return seed + (torch.arange(k, dtype=torch.int64) << 32)


# ---------------------------------------------------------------------------------------------
# References: the operators, unfused
# ---------------------------------------------------------------------------------------------

def head_eval_reference(hidden, weight, bias, labels, reference):
    """Logits of all V × N rows at once, then argmax, cross-entropy (float64) and the counts."""
    classes = weight.shape[0]
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < classes):
        raise ValueError(f"head_eval: labels must lie in [0, {classes}) for a head of {classes} classes, "
                         f"got labels from {int(labels.min())} to {int(labels.max())}")
    logits = F.linear(hidden, weight, bias)  # (V, N, C)
    v, n = logits.shape[:2]
    pred = logits.argmax(dim=2)
    loss = F.cross_entropy(logits.reshape(v * n, classes).double(), labels.repeat(v), reduction="none").view(v, n).sum(1)
    return (pred == labels).sum(1), loss, (pred == reference).sum(1)


def interp_unit_reference(x, weight0, bias0, weight1, bias1, alphas, activation="none"):
    """Each α's interpolated layer applied on its own: K products."""
    if activation not in ("none", "relu"):
        raise ValueError(f"interp_unit: activation must be 'none' or 'relu', got {activation!r}")
    outs = []
    for a in alphas.tolist():
        w = (1 - a) * weight0 + a * weight1
        b = None if bias0 is None else (1 - a) * bias0 + a * bias1
        z = F.linear(x, w, b)
        outs.append(torch.relu(z) if activation == "relu" else z)
    return torch.stack(outs) if outs else x.new_empty(0, x.shape[0], weight0.shape[0])


def noisy_unit_reference(x, weight, bias, sigmas, seeds, stream=0):
    """Every E_k materialized, then one batched product."""
    rows, cols = weight.shape
    noise = torch.stack([normal_noise(int(s) % 2**64, stream, rows, cols, weight.dtype) for s in seeds.tolist()]) \
        if len(seeds) else weight.new_empty(0, rows, cols)
    perturbed = weight + sigmas.to(weight.dtype).view(-1, 1, 1) * noise.to(weight.device)
    out = torch.matmul(x, perturbed.transpose(1, 2))
    return out if bias is None else out + bias


# ---------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------

def sources(csrc: Path = CSRC, cuda: bool | None = None) -> list[Path]:
    """The translation units to compile: the CPU ones, plus the CUDA ones when torch and nvcc have CUDA."""
    if cuda is None:
        cuda = cuda_buildable()
    return [csrc / "ops.cpp"] + ([csrc / "ops_cuda.cpp", csrc / "kernels.cu"] if cuda else [])


def toolchain_missing() -> str | None:
    """Why the library cannot be built here (no C++ compiler, no ninja), or None when it can."""
    from torch.utils import cpp_extension
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; set CXX)"
    if not cpp_extension.is_ninja_available():
        return "no ninja (pip install ninja)"
    return None


def cuda_buildable() -> bool:
    from torch.utils import cpp_extension
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


FALLBACK_ARCHS = "8.0;9.0"  # TORCH_CUDA_ARCH_LIST when no card is visible and torch names no architectures


def arch_list(arch_flags: list[str] | None = None) -> str:
    """A TORCH_CUDA_ARCH_LIST for the architectures torch itself was compiled for ("sm_90" → "9.0",
    "sm_90a" → "9.0a"; compute_* entries skipped), or FALLBACK_ARCHS when there are none. For
    builds that see no GPU (a build job on a CPU node), where torch.utils.cpp_extension would
    otherwise derive the flags from the visible cards and fail."""
    if arch_flags is None:
        arch_flags = torch.cuda.get_arch_list()  # [] where CUDA is not usable
        if not arch_flags and hasattr(torch._C, "_cuda_getArchFlags"):
            arch_flags = (torch._C._cuda_getArchFlags() or "").split()  # compiled in: needs no device
    archs = []
    for flag in arch_flags:
        if not flag.startswith("sm_"):
            continue
        digits = flag[3:]
        suffix = digits[len(digits.rstrip("abcdefghijklmnopqrstuvwxyz")):]
        digits = digits[:len(digits) - len(suffix)]
        if len(digits) >= 2 and digits.isdigit():
            arch = f"{digits[:-1]}.{digits[-1]}{suffix}"
            if arch not in archs:
                archs.append(arch)
    return ";".join(archs) or FALLBACK_ARCHS


def build(output: str | Path, *, cuda: bool | None = None, verbose: bool = False) -> Path:
    """Compile csrc/ into the shared library `output` (placed atomically; the build folder sits next
    to it and is removed). Needs a C++ compiler and ninja; CUDA kernels when torch has CUDA. With
    CUDA but no visible GPU and TORCH_CUDA_ARCH_LIST unset, the kernels are compiled for the
    architectures of torch's own build (`arch_list`), the variable set for this build only."""
    from torch.utils import cpp_extension
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=output.parent))
    with_cuda = cuda_buildable() if cuda is None else cuda
    set_archs = bool(with_cuda and torch.version.cuda and torch.cuda.device_count() == 0
                     and not os.environ.get("TORCH_CUDA_ARCH_LIST"))
    if set_archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
    try:
        built = cpp_extension.load(
            name="layerprobe_ops", sources=[str(s) for s in sources(cuda=with_cuda)], build_directory=str(work),
            # -ffp-contract=off: no fused multiply-adds behind the code's back (GCC contracts by
            # default on aarch64); the kernels round explicitly to match the reference.
            extra_cflags=["-O3", "-ffp-contract=off"], extra_cuda_cflags=["-O3"], extra_include_paths=[str(CSRC)],
            is_python_module=False, with_cuda=with_cuda, verbose=verbose)
        library = Path(built) if built else work / "layerprobe_ops.so"
        temporary = output.with_name(f".{output.name}.tmp{os.getpid()}")
        shutil.copyfile(library, temporary)
        os.replace(temporary, output)
    finally:
        if set_archs:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        shutil.rmtree(work, ignore_errors=True)
    _register_fakes()
    return output


def loaded() -> bool:
    """Whether torch.ops.layerprobe holds the operators (a library was loaded in this process)."""
    try:
        return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"layerprobe::{op}", "CPU") for op in OPS)
    except RuntimeError:
        return False


def load(path: str | Path) -> None:
    """Load a built library into this process (once: loading it again is a no-op)."""
    path = Path(path)
    if loaded():
        return
    if not path.is_file():
        raise OpsUnavailable(_missing(path))
    torch.ops.load_library(str(path))
    _register_fakes()


def has_device(device: str | torch.device) -> bool:
    """Whether the loaded library has kernels for `device`'s type (CPU always; CUDA if built with it)."""
    key = "CUDA" if torch.device(device).type == "cuda" else "CPU"
    return loaded() and all(torch._C._dispatch_has_kernel_for_dispatch_key(f"layerprobe::{op}", key) for op in OPS)


def available(path: str | Path | None = None) -> bool:
    """Whether the operators can be used: already loaded, or loadable from `path`."""
    if loaded():
        return True
    if path is None or not Path(path).is_file():
        return False
    try:
        load(path)
    except (OSError, RuntimeError):  # e.g. built against another torch
        return False
    return loaded()


def mode(value: str | bool) -> str:
    """engine.ops as one of MODES ("auto" | "on" | "off"): YAML's bare on / off arrive as True /
    False and mean "on" / "off"; anything else is a ValueError naming the choices."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if not isinstance(value, str) or value not in MODES:
        raise ValueError(f"engine.ops must be one of {MODES}, got {value!r}")
    return value


_mode = mode  # resolve's parameter of the same name shadows it


def resolve(mode: str | bool, path: str | Path | None = None, device: str | torch.device = "cpu") -> bool:
    """engine.ops → whether the engine uses the operators: "off" never; "auto" on a CUDA device when
    the library loads and has CUDA kernels (on the CPU the PyTorch path is as fast or faster:
    benchmarks/RESULTS.md); "on" on any device, or fails with the reason and how to build it.
    YAML's bare on / off arrive as True / False and mean the same (`mode`)."""
    mode = _mode(mode)
    if mode == "off":
        return False
    if mode == "auto":
        return torch.device(device).type == "cuda" and available(path) and has_device(device)
    if not loaded():
        if path is None:
            raise OpsUnavailable(_missing(LIBRARY))
        try:
            load(path)
        except OSError as err:
            raise OpsUnavailable(f"engine.ops is 'on' but {path} cannot be loaded ({err}); rebuild it with "
                                 f"`snakemake --cores 1 {LIBRARY}` (rule build_ops)") from None
    if not has_device(device):
        raise OpsUnavailable(f"engine.ops is 'on' but the compiled operators have no {torch.device(device).type} "
                             "kernels (built without CUDA?); rebuild on a machine with a CUDA build of torch and nvcc")
    return True


def _missing(path: Path) -> str:
    return (f"engine.ops is 'on' but the compiled operators {path} do not exist; build them with "
            f"`snakemake --cores 1 {LIBRARY}` (rule build_ops) or layerprobe.ops.build(path), "
            "or set engine.ops to auto or off")


_FAKES = False


def _register_fakes() -> None:
    """Shapes and dtypes of the outputs, for torch.compile and FakeTensor tracing."""
    global _FAKES
    if _FAKES or not loaded():
        return

    @torch.library.register_fake("layerprobe::head_eval")
    def _(hidden, weight, bias, labels, reference):
        v = hidden.shape[0]
        return (hidden.new_empty(v, dtype=torch.int64), hidden.new_empty(v, dtype=torch.float64),
                hidden.new_empty(v, dtype=torch.int64))

    @torch.library.register_fake("layerprobe::interp_unit")
    def _(x, weight0, bias0, weight1, bias1, alphas, activation):
        return x.new_empty(alphas.shape[0], x.shape[0], weight0.shape[0])

    @torch.library.register_fake("layerprobe::noisy_unit")
    def _(x, weight, bias, sigmas, seeds, stream):
        return x.new_empty(sigmas.shape[0], x.shape[0], weight.shape[0])

    _FAKES = True


# ---------------------------------------------------------------------------------------------
# The operators (the library must be loaded)
# ---------------------------------------------------------------------------------------------

def head_eval(hidden, weight, bias, labels, reference):
    return torch.ops.layerprobe.head_eval(hidden, weight, bias, labels, reference)


def interp_unit(x, weight0, bias0, weight1, bias1, alphas, activation="none"):
    return torch.ops.layerprobe.interp_unit(x, weight0, bias0, weight1, bias1, alphas, activation)


def noisy_unit(x, weight, bias, sigmas, seeds, stream=0):
    return torch.ops.layerprobe.noisy_unit(x, weight, bias, sigmas, seeds, stream)
