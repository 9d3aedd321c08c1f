"""The device a job computes on."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" is CUDA when present, else the CPU; a CUDA device asked for where there is none is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} asked for, but this machine has no CUDA device; use auto or cpu")
    return device
