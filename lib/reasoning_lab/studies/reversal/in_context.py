"""Reversal with the fact in context (Zhu et al. 2024, ``train_reverse_ICL``).

Token ids: ``0`` "→", ``1`` "←", ``2`` "↔"; entity tokens follow. ``n_a`` A tokens and ``n_b`` B tokens are
drawn without replacement from ``vocab_size`` ids (shifted past the three relation tokens). Every A is paired
with every B, and each pair gives one sentence ``A → B ↔ B ← A``: the forward fact, a link, then the reverse
question whose answer — the final ``A`` — already sits at position 0. Per A token, a random
``train_fraction`` of its B partners (7 of 10 by default) go to training and the rest are held out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data import SeqData, TaskData

FORWARD, BACKWARD, LINK = 0, 1, 2
N_RELATIONS = 3
SEQ_LEN = 7


@dataclass
class ReversalICLData(TaskData):
    a: torch.Tensor        # [n_a] A token ids
    b: torch.Tensor        # [n_b] B token ids

    @property
    def n_answers(self) -> int:     # the A tokens
        return len(self.a)


def icl_sentences(a: torch.Tensor, b: torch.Tensor) -> SeqData:
    """Rows ``a → b ↔ b ← a`` for aligned 1-D tensors ``a``, ``b``; the final ``a`` is the answer."""
    n = len(a)
    rel = lambda t: torch.full((n,), t, dtype=torch.long)
    tokens = torch.stack([a, rel(FORWARD), b, rel(LINK), b, rel(BACKWARD), a], dim=1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, -1] = True
    return SeqData(tokens, answer)


def make_reversal_icl_data(vocab_size: int = 400, n_a: int = 100, n_b: int = 10, seed: int = 0,
                           train_fraction: float = 0.7) -> ReversalICLData:
    if n_a < 1 or n_b < 2 or n_a + n_b > vocab_size:
        raise ValueError(f"need n_a >= 1, n_b >= 2 and n_a + n_b <= vocab_size, got n_a={n_a}, n_b={n_b}, "
                         f"vocab_size={vocab_size}")
    n_train = int(n_b * train_fraction)
    if not 1 <= n_train < n_b:
        raise ValueError(f"train_fraction={train_fraction} leaves no training or no held-out partner "
                         f"out of n_b={n_b}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(vocab_size, generator=g)[: n_a + n_b] + N_RELATIONS
    a, b = ids[:n_a], ids[n_a:]
    order = torch.rand(n_a, n_b, generator=g).argsort(dim=1)     # a random order of partners per A
    a_rows = a[:, None].expand(n_a, n_b)
    b_rows = b[order]
    train = icl_sentences(a_rows[:, :n_train].reshape(-1), b_rows[:, :n_train].reshape(-1))
    valid = icl_sentences(a_rows[:, n_train:].reshape(-1), b_rows[:, n_train:].reshape(-1))
    return ReversalICLData(train, valid, vocab_size + N_RELATIONS, a, b)
