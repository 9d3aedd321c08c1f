"""Compiling csrc/ into the shared library of the fused operators (torch.utils.cpp_extension).

The workflow's rule build_ops calls `build` once; probe jobs only load the result
(layerprobe.probing.ops.load). Whether it can be built here at all is
layerprobe.config.resources.toolchain_missing (decided without torch, at workflow parse time).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from layerprobe.probing.ops import register_fakes

CSRC = Path(__file__).resolve().parents[3] / "csrc"


def sources(csrc: Path = CSRC, cuda: bool | None = None) -> list[Path]:
    """The translation units to compile: the CPU ones, plus the CUDA ones when torch and nvcc have CUDA."""
    if cuda is None:
        cuda = cuda_buildable()
    return [csrc / "ops.cpp"] + ([csrc / "ops_cuda.cpp", csrc / "kernels.cu"] if cuda else [])


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
        suffix = digits[len(digits.rstrip("abcdefghijklmnopqrstuvwxyz")) :]
        digits = digits[: len(digits) - len(suffix)]
        if len(digits) >= 2 and digits.isdigit():
            arch = f"{digits[:-1]}.{digits[-1]}{suffix}"
            if arch not in archs:
                archs.append(arch)
    return ";".join(archs) or FALLBACK_ARCHS


def build_ops(output: str | Path, *, cuda: bool | None = None, verbose: bool = False) -> Path:
    """Compile csrc/ into the shared library `output` (placed atomically; the build folder sits next
    to it and is removed). Needs a C++ compiler and ninja; CUDA kernels when torch has CUDA. With
    CUDA but no visible GPU and TORCH_CUDA_ARCH_LIST unset, the kernels are compiled for the
    architectures of torch's own build (`arch_list`), the variable set for this build only."""
    from torch.utils import cpp_extension

    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=output.parent))
    with_cuda = cuda_buildable() if cuda is None else cuda
    set_archs = bool(
        with_cuda
        and torch.version.cuda
        and torch.cuda.device_count() == 0
        and not os.environ.get("TORCH_CUDA_ARCH_LIST")
    )
    if set_archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
    try:
        built = cpp_extension.load(
            name="layerprobe_ops",
            sources=[str(s) for s in sources(cuda=with_cuda)],
            build_directory=str(work),
            # -ffp-contract=off: no fused multiply-adds behind the code's back (GCC contracts by
            # default on aarch64); the kernels round explicitly to match the reference.
            extra_cflags=["-O3", "-ffp-contract=off"],
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
