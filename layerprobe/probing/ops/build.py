"""Compiling csrc/ into the shared library of the fused operators (torch.utils.cpp_extension).

The workflow's rule build_ops calls `build_ops` once; probe jobs only load the result
(layerprobe.probing.ops.load). Whether it can be built here at all is
layerprobe.config.resources.toolchain_missing (decided without torch, at workflow parse time), and
whether with CUDA kernels `cuda_missing`: a CUDA build of torch, a CUDA toolkit (found as
resources.find_cuda_home finds it, also behind an nvcc wrapper script) and the CUDA library
headers torch's own headers include (from the toolkit or from the NVIDIA wheels a CUDA torch
brings, `nvidia_include_dirs`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from layerprobe.config.resources import find_cuda_home
from layerprobe.probing.ops import register_fakes

CSRC = Path(__file__).resolve().parents[3] / "csrc"

# The CUDA library headers that torch's ATen/cuda/CUDAContext.h includes (through CUDAContextLight.h;
# the same five in torch 2.13 and 2.14, cuDSS only where torch was built with it), which ops_cuda.cpp
# includes through it. A toolkit may lack the math libraries' ones (cuBLAS, cuSPARSE,
# cuSOLVER); a CUDA build of torch from PyPI then has them in its NVIDIA wheels.
CUDA_HEADERS = ("cuda_runtime_api.h", "cusparse.h", "cublas_v2.h", "cublasLt.h", "cusolverDn.h")


def sources(csrc: Path = CSRC, cuda: bool | None = None) -> list[Path]:
    """The translation units to compile: the CPU ones, plus the CUDA ones when the CUDA kernels can be built."""
    if cuda is None:
        cuda = cuda_buildable()
    return [csrc / "ops.cpp"] + ([csrc / "ops_cuda.cpp", csrc / "kernels.cu"] if cuda else [])


def nvidia_include_dirs(site_dirs: list[str] | None = None) -> list[Path]:
    """The include folders of the installed NVIDIA wheels (nvidia-cublas, nvidia-cusparse, ..., which a
    CUDA build of torch from PyPI depends on): every `nvidia/<package>/include` under the entries of
    sys.path (or `site_dirs`), the `nvidia` namespace package's folders, in that order. CUDA 13's
    wheels share one, nvidia/cu13/include; CUDA 12's have one each (nvidia/cublas/include, ...)."""
    found: list[Path] = []
    for entry in sys.path if site_dirs is None else site_dirs:
        namespace = Path(entry or ".") / "nvidia"
        if not namespace.is_dir():
            continue
        for folder in sorted(namespace.glob("*/include")):
            if folder.is_dir() and folder.resolve() not in {f.resolve() for f in found}:
                found.append(folder)
    return found


def find_cuda() -> tuple[Path | None, list[Path], str | None]:
    """What a build of the CUDA kernels uses: (the toolkit, the NVIDIA wheels' include folders, None),
    or (..., the reason) when they cannot be built here: torch without CUDA, no toolkit, or a header
    of CUDA_HEADERS neither in the toolkit nor in a wheel."""
    if torch.version.cuda is None:
        return None, [], f"torch {torch.__version__} is not a CUDA build"
    home, why = find_cuda_home()
    if home is None:
        return None, [], why
    wheels = nvidia_include_dirs()
    absent = [h for h in CUDA_HEADERS if not any((d / h).is_file() for d in [home / "include", *wheels])]
    if absent:
        return (
            home,
            wheels,
            f"no {', '.join(absent)} (which torch's CUDA headers include) in {home / 'include'} or in an "
            "installed NVIDIA wheel (nvidia/*/include on sys.path): install the CUDA toolkit's math "
            f"libraries, or the nvidia-* wheels of torch's CUDA {torch.version.cuda}",
        )
    return home, wheels, None


def cuda_missing() -> str | None:
    """Why the CUDA kernels cannot be built here (`find_cuda`), or None when they can."""
    return find_cuda()[2]


def cuda_buildable() -> bool:
    return cuda_missing() is None


@contextlib.contextmanager
def toolkit_for_torch(home: Path):
    """torch.utils.cpp_extension decides its CUDA_HOME once, when first imported (CUDA_HOME or
    CUDA_PATH, else the folder above the bin/ of the nvcc on PATH, else /usr/local/cuda), which is
    wrong where that nvcc is a wrapper script (it gives /usr/local for /usr/local/bin/nvcc). Its
    functions read the module's CUDA_HOME when called (_join_cuda_home: nvcc, include/ and lib64/;
    _check_cuda_version), and it derives nothing else from it, so a build sets it to `home` and
    restores it after; os.environ is left alone."""
    from torch.utils import cpp_extension

    saved = cpp_extension.CUDA_HOME
    cpp_extension.CUDA_HOME = str(home)
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved


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
        suffix = digits[len(digits.rstrip("abcdefghijklmnopqrstuvwxyz")) :]
        digits = digits[: len(digits) - len(suffix)]
        if len(digits) >= 2 and digits.isdigit():
            arch = f"{digits[:-1]}.{digits[-1]}{suffix}"
            if arch not in archs:
                archs.append(arch)
    return ";".join(archs) or FALLBACK_ARCHS


def build_ops(output: str | Path, *, cuda: bool | None = None, verbose: bool = False) -> Path:
    """Compile csrc/ into the shared library `output` (placed atomically; the build folder sits next
    to it and is removed). Needs a C++ compiler and ninja. The CUDA kernels: with `cuda` True, or
    None where they can be built here (`cuda_missing`; a CUDA torch that cannot build them builds the
    CPU operators alone and warns why); True where they cannot is a RuntimeError naming what is
    missing. A CUDA build compiles with the toolkit `find_cuda` found (`toolkit_for_torch`) and finds
    the headers the toolkit lacks in the NVIDIA wheels' include folders, searched after its own
    (-idirafter, so the toolkit's cuda_runtime.h and the like win). With CUDA but no visible GPU and
    TORCH_CUDA_ARCH_LIST unset, the kernels are compiled for the architectures of torch's own build
    (`arch_list`), the variable set for this build only."""
    from torch.utils import cpp_extension

    home, wheels, missing = find_cuda() if cuda is not False else (None, [], None)
    if cuda and missing:
        raise RuntimeError(f"cannot build the CUDA kernels of the fused operators: {missing}")
    with_cuda = missing is None if cuda is None else cuda
    if cuda is None and missing and torch.version.cuda is not None:
        warnings.warn(f"building the fused operators without their CUDA kernels: {missing}", stacklevel=2)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=output.parent))
    set_archs = bool(with_cuda and torch.cuda.device_count() == 0 and not os.environ.get("TORCH_CUDA_ARCH_LIST"))
    if set_archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
    # -ffp-contract=off: no fused multiply-adds behind the code's back (GCC contracts by default on
    # aarch64); the kernels round explicitly to match the reference.
    cflags = ["-O3", "-ffp-contract=off"]
    if with_cuda:
        cflags += [flag for folder in wheels for flag in ("-idirafter", str(folder))]
    try:
        with toolkit_for_torch(home) if with_cuda else contextlib.nullcontext():
            built = cpp_extension.load(
                name="layerprobe_ops",
                sources=[str(s) for s in sources(cuda=with_cuda)],
                build_directory=str(work),
                extra_cflags=cflags,
                extra_cuda_cflags=["-O3"],
                extra_include_paths=[str(CSRC)],
                is_python_module=False,
                with_cuda=with_cuda,
                verbose=verbose,
            )
        library = Path(built) if built else work / "layerprobe_ops.so"
        temporary = output.with_name(f".{output.name}.tmp{os.getpid()}")
        shutil.copyfile(library, temporary)
        os.replace(temporary, output)
    finally:
        if set_archs:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        shutil.rmtree(work, ignore_errors=True)
    register_fakes()  # cpp_extension.load has loaded the library into this process
    return output
