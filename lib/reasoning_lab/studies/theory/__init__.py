"""Training-dynamics models behind the theory chapters: the bilinear model and the one-layer transformer."""
from . import bilinear, one_layer

__all__ = ["bilinear", "one_layer"]
