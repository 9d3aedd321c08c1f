"""What a job asks of the machine, decided without torch (the Snakefile plans jobs with only yaml and jsonschema).

GPUs per job (`resources.<rule>.gpu`), whether the fused operators of csrc/ can be and are to be
built (engine.ops), and where the CUDA toolkit that compiles their kernels lives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from layerprobe.config.values import ops_mode


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to its processes (driver entries, respecting
    CUDA_VISIBLE_DEVICES), read without initializing CUDA or importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    driver = Path("/proc/driver/nvidia/gpus")
    return (driver.is_dir() and any(driver.iterdir())) or Path("/dev/nvidia0").exists()


def job_gpus(setting: int | str, device: str) -> int:
    """GPUs a job asks a scheduler for: `resources.<rule>.gpu`, where auto is 1 for a job whose device is
    cuda, or auto on a machine that sees a GPU (where the workflow is planned), else 0."""
    if setting != "auto":
        return int(setting)
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and gpu_visible())


def toolchain_missing() -> str | None:
    """Why the operators cannot be built here (no C++ compiler, no ninja), or None when they can."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; set CXX)"
    if shutil.which("ninja") is None:
        return "no ninja (pip install ninja)"
    return None


# torch's last guess (torch.utils.cpp_extension._find_cuda_home) when no nvcc is on PATH; a variable
# so that tests can point it elsewhere.
DEFAULT_CUDA_HOME = "/usr/local/cuda"


def is_cuda_toolkit(folder: str | Path) -> bool:
    """Whether `folder` is a CUDA toolkit to compile with: bin/nvcc and include/cuda_runtime.h."""
    folder = Path(folder)
    return (folder / "bin" / "nvcc").is_file() and (folder / "include" / "cuda_runtime.h").is_file()


def toolkit_of(nvcc: str | Path) -> Path | None:
    """The toolkit an nvcc belongs to, as nvcc itself reports it: the TOP (else _HERE_/..) of the
    environment `nvcc --dryrun` prints. Where nvcc is a wrapper script (`exec /opt/cuda-X/bin/nvcc
    "$@"`) or a link, this is the real one's toolkit, which no path arithmetic on the wrapper finds.
    None when it does not run, prints neither, or names no toolkit (`is_cuda_toolkit`)."""
    try:
        result = subprocess.run(
            [str(nvcc), "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout + result.stderr
    for name, up in (("TOP", ""), ("_HERE_", "..")):
        found = re.search(rf"^#\$ {name}=(.+?)\s*$", text, re.M)
        if found:
            folder = (Path(found[1]) / up).resolve()
            if is_cuda_toolkit(folder):
                return folder
    return None


def find_cuda_home() -> tuple[Path | None, str | None]:
    """The CUDA toolkit to compile the kernels with, found without torch, and why there is none.

    In order: CUDA_HOME or CUDA_PATH when set (taken as given, as torch takes it: a wrong one is
    reported, not overridden); the folder above the bin/ of the `nvcc` on PATH (torch's own guess)
    when it is a toolkit; the same for that nvcc with its links resolved; the toolkit nvcc reports
    itself (`toolkit_of`: a wrapper script); DEFAULT_CUDA_HOME. Returns (folder, None) or (None, reason).
    """
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        given = os.environ.get(variable)
        if given:
            if is_cuda_toolkit(given):
                return Path(given), None
            return None, f"{variable}={given} is not a CUDA toolkit (it needs bin/nvcc and include/cuda_runtime.h)"
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        for folder in (Path(nvcc).parent.parent, Path(nvcc).resolve().parent.parent):
            if is_cuda_toolkit(folder):
                return folder, None
        folder = toolkit_of(nvcc)
        if folder is not None:
            return folder, None
    if is_cuda_toolkit(DEFAULT_CUDA_HOME):
        return Path(DEFAULT_CUDA_HOME), None
    if nvcc is None:
        return None, (
            "no CUDA toolkit: nvcc is not on PATH, CUDA_HOME and CUDA_PATH are unset, and "
            f"{DEFAULT_CUDA_HOME} holds none"
        )
    return None, (
        f"no CUDA toolkit: the nvcc on PATH ({nvcc}) names no folder with bin/nvcc and "
        "include/cuda_runtime.h (in `nvcc --dryrun`'s TOP), nor does its parent; set CUDA_HOME"
    )


def cuda_missing() -> str | None:
    """Why no CUDA toolkit is found here (`find_cuda_home`), or None when one is."""
    return find_cuda_home()[1]


def builds_ops(engine: dict) -> bool:
    """Whether the workflow builds the fused operators for its probe jobs: engine.ops on, or auto for
    probes on a GPU where a toolchain can build them, CUDA toolkit included (on a CPU the PyTorch
    path is as fast, so a library without CUDA kernels would go unused; without a toolchain the
    workflow runs on PyTorch)."""
    mode = ops_mode(engine["ops"])
    return mode == "on" or (
        mode == "auto"
        and job_gpus("auto", engine["device"]) > 0
        and toolchain_missing() is None
        and cuda_missing() is None
    )
