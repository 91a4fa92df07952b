"""Devices and seeding: which accelerator a run uses, and one call that seeds every random stream."""
from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|mps`` to an available device; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("parameter device='cuda' is not allowed here: no CUDA device is available "
                         "(use 'auto' or 'cpu')")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("parameter device='mps' is not allowed here: no MPS device is available "
                         "(use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"parameter device={name!r} is not allowed: expected one of 'auto', 'cpu', 'cuda', 'mps'")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded the same way for data."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
