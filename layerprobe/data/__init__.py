"""Datasets: downloaded and verified (download), read by their format (formats, prepare), held as uint8 tensors (dataset)."""
