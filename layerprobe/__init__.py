"""layerprobe: which layers ("units") of a trained network matter?

Re-initialization, re-randomization, interpolation, module criticality and joint probes per unit,
after Zhang, Bengio & Singer, "Are All Layers Created Equal?" (JMLR 2022) and Chatterji, Neyshabur
& Sedghi (ICLR 2020). See README.md for the workflow, the tables and the library face:

    layerprobe.units(model)                                  # what will be reset, and what not
    layerprobe.probe(model, checkpoints, data)               # the robustness table

The packages follow the data flow, each importing only from those before it: base, config, data,
models, training, probing, results, kinds; then study (one run), aggregate (all runs) and api.
The face is loaded on first use, so `import layerprobe.config` (the Snakefile's) needs no torch.
"""

__version__ = "0.2.0"
__all__ = ["probe", "units"]


def __getattr__(name: str):
    if name in __all__:
        from layerprobe import api

        return getattr(api, name)
    raise AttributeError(f"module 'layerprobe' has no attribute {name!r}")
