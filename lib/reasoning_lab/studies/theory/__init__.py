"""Training-dynamics models behind the theory chapters: the bilinear model and the one-layer transformer."""
from ...lazy import exports

# loaded on first use: the registry reads experiment.py without them
__getattr__, __dir__ = exports(__name__, {})

__all__ = ["bilinear", "one_layer"]
