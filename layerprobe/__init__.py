"""layerprobe: which layers ("units") of a trained network matter?

Re-initialization, re-randomization, interpolation, module criticality and joint probes per unit,
after Zhang, Bengio & Singer, "Are All Layers Created Equal?" (JMLR 2022) and Chatterji, Neyshabur
& Sedghi (ICLR 2020). See README.md for the workflow, the tables and the library face below.
"""
from layerprobe.api import probe, units

__version__ = "0.2.0"
__all__ = ["probe", "units"]
