"""layerprobe: which layers ("units") of a trained network matter?

Re-initialization, re-randomization and distance probes per unit, after Zhang, Bengio & Singer,
"Are All Layers Created Equal?" (JMLR 2022). See README.md for the workflow and the tables.
"""
__version__ = "0.1.0"
