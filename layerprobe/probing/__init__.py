"""Evaluating variants of a trained model: what a variant is (variants, compose, noise), the engine that
evaluates many at once, its fused operators (ops), the plain reference it is tested against, and the
distances of units from their initialization."""
