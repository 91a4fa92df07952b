"""Llama-style models sized from a parameter budget and a depth, with the true parameter count.

The original (``calculate_architecture``) takes a budget $P$ and depth $L$ and sets
$h = \\lfloor\\sqrt{(P - 320{,}000)/(12L)}\\rfloor$ rounded down to a multiple of 16, 16-dimensional heads and a
SwiGLU MLP of width $4h$. The formula assumes $12h^2$ weights per layer (4 attention + 8 MLP), but a SwiGLU
MLP has three matrices, so a layer really holds $4h^2 + 3\\cdot 4h^2 = 16h^2$: the formula undercounts the
body by 4/3, and the constant 320,000 stands for the embeddings of a 3,000-token vocabulary at one width
only. Here the width is the largest multiple of the head size whose *exact* count (``count_params``,
checked against the module) fits the budget, for our vocabulary; both counts are reported.
"""
from __future__ import annotations

import math

from ...model import ModelConfig, count_params
from .questions import SEQ_LEN


def original_architecture(num_params: int, n_layers: int) -> dict[str, int]:
    """The original's rule: width, heads, MLP width and the parameter count its formula assumes."""
    resid = num_params - 320_000
    if resid <= 0:
        raise ValueError(f"parameter budget={num_params} is not allowed by the original rule: expected > 320,000")
    h = int(math.isqrt(resid // (12 * n_layers)))
    h -= h % 16
    if h == 0:
        raise ValueError(f"parameter budget={num_params} is too small for {n_layers} layers under the original rule")
    return {"d_model": h, "n_heads": h // 16, "d_ff": 4 * h, "formula_params": 12 * n_layers * h * h + 320_000}


def llama_config(d_model: int, n_layers: int, vocab_size: int, head_dim: int = 16) -> ModelConfig:
    """Llama block (RMSNorm, RoPE, SwiGLU of width 4·d_model), untied embeddings, as in the original."""
    return ModelConfig(vocab_size=vocab_size, n_layers=n_layers, n_heads=max(1, d_model // head_dim),
                       d_model=d_model, d_ff=4 * d_model, max_len=SEQ_LEN, arch="llama",
                       pos_encoding="rotary", tie_embeddings=False)


def config_for_budget(budget: int, n_layers: int, vocab_size: int, head_dim: int = 16) -> ModelConfig:
    """The widest model (width a multiple of ``head_dim``) whose exact parameter count is <= ``budget``."""
    best = None
    d = head_dim
    while True:
        cfg = llama_config(d, n_layers, vocab_size, head_dim)
        if count_params(cfg)["total"] > budget:
            break
        best, d = cfg, d + head_dim
    if best is None:
        smallest = count_params(llama_config(head_dim, n_layers, vocab_size, head_dim))["total"]
        raise ValueError(f"parameter budget={budget} is not allowed: the smallest {n_layers}-layer model with "
                         f"a {vocab_size}-token vocabulary has {smallest:,} parameters")
    return best


def formula_count(cfg: ModelConfig) -> int:
    """What the original's 12·L·h² rule says this model has (with our embeddings instead of 320,000)."""
    return 12 * cfg.n_layers * cfg.d_model ** 2 + count_params(cfg)["embedding"]
