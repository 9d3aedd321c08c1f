"""The built-in model families, one module each (the registry, `MODELS`, is layerprobe.models)."""
