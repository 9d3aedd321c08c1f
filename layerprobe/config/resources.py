"""What a job asks of the machine, decided without torch (the Snakefile plans jobs with only yaml and jsonschema).

GPUs per job (`resources.<rule>.gpu`), and whether the fused operators of csrc/ can be and are to be
built (engine.ops).
"""

from __future__ import annotations

import os
import shutil
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


def builds_ops(engine: dict) -> bool:
    """Whether the workflow builds the fused operators for its probe jobs: engine.ops on, or auto for
    probes on a GPU where a toolchain can build them (on a CPU the PyTorch path is as fast; without a
    toolchain the workflow runs on PyTorch)."""
    mode = ops_mode(engine["ops"])
    return mode == "on" or (mode == "auto" and toolchain_missing() is None and job_gpus("auto", engine["device"]) > 0)
