"""layerprobe: which layers ("units") of a trained network matter?

Re-initialization, re-randomization, interpolation, module criticality and joint probes per unit,
after Zhang, Bengio & Singer, "Are All Layers Created Equal?" (JMLR 2022) and Chatterji, Neyshabur
& Sedghi (ICLR 2020). See README.md for the workflow, the tables and the library face below.
"""
__version__ = "0.2.0"
__all__ = ["probe", "units"]


def __getattr__(name):
    # Imported on first use, so that a job needing only e.g. layerprobe.download (a dataset file)
    # does not pay for importing torch.
    if name in __all__:
        from layerprobe import api

        return getattr(api, name)
    raise AttributeError(f"module 'layerprobe' has no attribute {name!r}")
