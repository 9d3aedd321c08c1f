"""The Python face of csrc/: the fused operators, loaded from a built library, for the engine.

The compiled library registers three operators under torch.ops.layerprobe (CPU kernels always,
CUDA kernels when it was built against a CUDA build of torch):

  head_eval(hidden (V, N, F), weight (C, F), bias (C)?, labels (N), reference (N))
      → correct (V) int64, loss (V) float64 (summed cross-entropy), agree (V) int64,
        worse (V) int64 (inputs the reference predicts right and the variant wrong)
  interp_unit(x (B, I), weight0, bias0?, weight1, bias1?, alphas (K), activation "none" | "relu")
      → (K, B, O): act(x W0ᵀ + b0 + α_k ((x W1ᵀ + b1) − (x W0ᵀ + b0)))
  noisy_unit(x (B, I), weight (O, I), bias (O)?, sigmas (K), seeds (K) int64, stream)
      → (K, B, O): x (W + σ_k E_k)ᵀ + b, E_k = noise.normal_noise(seeds[k], stream, O, I)

Their references are in `reference` (unfused), the build in `build`. The library is an accelerator,
never a requirement: `load` loads a built one, and `resolve` turns the config's engine.ops
(auto | on | off) into a yes or no for the engine. Paths are always the caller's: this package
knows nothing of where a workflow keeps its files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.config.values import ops_mode

OPS = ("head_eval", "interp_unit", "noisy_unit")


class OpsUnavailable(RuntimeError):
    """engine.ops is "on" but the compiled library is missing or cannot serve the device."""


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
    register_fakes()


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


def resolve(mode: str | bool, path: str | Path | None = None, device: str | torch.device = "cpu") -> bool:
    """engine.ops → whether the engine uses the operators: "off" never; "auto" on a CUDA device when
    the library loads and has CUDA kernels (on the CPU the PyTorch path is as fast or faster:
    benchmarks/RESULTS.md); "on" on any device, or fails with the reason and how to build it.
    YAML's bare on / off arrive as True / False and mean the same (`mode`)."""
    mode = ops_mode(mode)
    if mode == "off":
        return False
    if mode == "auto":
        return torch.device(device).type == "cuda" and available(path) and has_device(device)
    if not loaded():
        if path is None:
            raise OpsUnavailable(
                "engine.ops is 'on' but no compiled operators were given; build them with "
                "layerprobe.probing.ops.build.build_ops(path) and pass that path, or set engine.ops "
                "to auto or off"
            )
        try:
            load(path)
        except OSError as err:
            raise OpsUnavailable(
                f"engine.ops is 'on' but {path} cannot be loaded ({err}); rebuild it "
                "(layerprobe.probing.ops.build.build_ops) for this torch"
            ) from None
    if not has_device(device):
        raise OpsUnavailable(
            f"engine.ops is 'on' but the compiled operators have no {torch.device(device).type} "
            "kernels (built without CUDA?); rebuild on a machine with a CUDA build of torch and nvcc"
        )
    return True


def _missing(path: Path) -> str:
    return (
        f"engine.ops is 'on' but the compiled operators {path} do not exist; build them with "
        "layerprobe.probing.ops.build.build_ops(path), or set engine.ops to auto or off"
    )


_FAKES = False


def register_fakes() -> None:
    """Shapes and dtypes of the outputs, for torch.compile and FakeTensor tracing (once the library is loaded)."""
    global _FAKES
    if _FAKES or not loaded():
        return

    @torch.library.register_fake("layerprobe::head_eval")
    def _(hidden, weight, bias, labels, reference):
        v = hidden.shape[0]
        return (
            hidden.new_empty(v, dtype=torch.int64),
            hidden.new_empty(v, dtype=torch.float64),
            hidden.new_empty(v, dtype=torch.int64),
            hidden.new_empty(v, dtype=torch.int64),
        )

    @torch.library.register_fake("layerprobe::interp_unit")
    def _(x, weight0, bias0, weight1, bias1, alphas, activation):
        return x.new_empty(alphas.shape[0], x.shape[0], weight0.shape[0])

    @torch.library.register_fake("layerprobe::noisy_unit")
    def _(x, weight, bias, sigmas, seeds, stream):
        return x.new_empty(sigmas.shape[0], x.shape[0], weight.shape[0])

    _FAKES = True


# The operators (the library must be loaded)


def head_eval(hidden, weight, bias, labels, reference):
    return torch.ops.layerprobe.head_eval(hidden, weight, bias, labels, reference)


def interp_unit(x, weight0, bias0, weight1, bias1, alphas, activation="none"):
    return torch.ops.layerprobe.interp_unit(x, weight0, bias0, weight1, bias1, alphas, activation)


def noisy_unit(x, weight, bias, sigmas, seeds, stream=0):
    return torch.ops.layerprobe.noisy_unit(x, weight, bias, sigmas, seeds, stream)
