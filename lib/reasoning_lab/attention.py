"""Attention patterns of a trained :class:`~reasoning_lab.models.Transformer`.

The model itself calls ``scaled_dot_product_attention``, which never materialises the attention matrix;
this module recomputes it from the residual stream, block by block, with the same queries, keys, rotary
positions, scale and mask.
"""
from __future__ import annotations

import math

import torch

from .models import Transformer, apply_rotary


@torch.no_grad()
def attention_weights(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """``[n_layers, B, n_heads, T, T]``: row ``t`` of head ``h`` in layer ``l`` is how position ``t`` spreads
    its attention over positions ``0..T-1`` (rows sum to 1; no weight on later positions when causal)."""
    was_training = model.training
    model.eval()
    cfg = model.cfg
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    B, T = tokens.shape
    states = model.hidden_states(tokens)                     # input of every block
    rope = (model.rope_cos[:T], model.rope_sin[:T]) if cfg.pos_encoding == "rotary" else None
    scale = cfg.attn_scale if cfg.attn_scale is not None else 1 / math.sqrt(cfg.head_dim)
    causal = getattr(cfg, "causal", True)
    out = []
    for block, x in zip(model.blocks, states[:-1]):
        q, k, _ = block.attn.qkv(block.norm1(x)).view(B, T, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        scores = (q @ k.transpose(-1, -2)).float() * scale
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        out.append(scores.softmax(-1))
    model.train(was_training)
    return torch.stack(out).cpu()
