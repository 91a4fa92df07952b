"""Reversal data as the original experiment builds it (Zhu et al. 2024, ``train_reverse``).

Token ids: ``0`` is the forward relation "→", ``1`` the backward relation "←"; entity tokens follow.
Two disjoint alphabets of ``vocab_size // 4`` tokens each make the A and B entities; an entity is a word of
``word_size`` tokens (Cartesian product of the alphabet, shuffled), and ``n_pairs = min(#words, 2·alphabet)``
pairs (Aᵢ, Bᵢ) are drawn. Sequences are ``Aᵢ → Bᵢ`` and ``Bᵢ ← Aᵢ``. 70% of pairs put both directions in
training; for each remaining pair a fair coin puts one direction in training and holds out the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training import SeqData

FORWARD, BACKWARD = 0, 1
N_RELATIONS = 2


@dataclass
class ReversalData:
    train: SeqData
    valid: SeqData
    vocab_size: int               # model vocabulary: relation tokens + entity token range
    a: torch.Tensor               # [n_pairs, word_size] token ids of A entities
    b: torch.Tensor               # [n_pairs, word_size] token ids of B entities
    train_pairs: torch.Tensor     # indices of pairs with both directions in training
    valid_pairs: torch.Tensor     # indices of held-out pairs
    valid_forward_seen: torch.Tensor  # [len(valid_pairs)] bool: True if "A → B" was trained, "B ← A" held out

    @property
    def n_pairs(self) -> int:
        return self.a.shape[0]

    @property
    def chance_prob(self) -> float:
        """Uniform guess over the entities that can fill the answer slot."""
        return 1.0 / self.n_pairs


def entity_words(alphabet: torch.Tensor, word_size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct words of ``word_size`` tokens from ``alphabet``, drawn uniformly without replacement."""
    size = len(alphabet)
    total = size ** word_size
    if total <= 10_000_000:  # enumerate the word space and shuffle it
        codes = torch.randperm(total, generator=generator)[:n]
    else:  # sample codes, keep the first occurrence of each, repeat until n are distinct
        codes = torch.empty(0, dtype=torch.long)
        while len(codes) < n:
            merged = torch.cat([codes, torch.randint(total, (2 * n,), generator=generator)])
            order = torch.argsort(merged, stable=True)
            first = torch.ones(len(merged), dtype=torch.bool)
            first[1:] = merged[order][1:] != merged[order][:-1]
            keep = torch.zeros(len(merged), dtype=torch.bool)
            keep[order[first]] = True
            codes = merged[keep][:n]
    digits = torch.stack([(codes // size ** i) % size for i in reversed(range(word_size))], dim=1)
    return alphabet[digits]


def sequences(left: torch.Tensor, relation: int, right: torch.Tensor) -> SeqData:
    """Rows ``left relation right`` with the ``right`` entity as the answer."""
    n, k = left.shape
    rel = torch.full((n, 1), relation, dtype=torch.long)
    tokens = torch.cat([left, rel, right], dim=1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, k + 1:] = True
    return SeqData(tokens, answer)


def make_reversal_data(vocab_size: int = 800, word_size: int = 1, seed: int = 0,
                       train_fraction: float = 0.7) -> ReversalData:
    g = torch.Generator().manual_seed(seed)
    alphabet = vocab_size // 4
    if alphabet < 2:
        raise ValueError(f"parameter vocab_size={vocab_size} is not allowed: expected at least 8")
    ids = torch.randperm(vocab_size, generator=g)[: 2 * alphabet] + N_RELATIONS
    a_alpha, b_alpha = ids[:alphabet], ids[alphabet:]
    n_pairs = min(alphabet ** word_size, 2 * alphabet)
    a = entity_words(a_alpha, word_size, n_pairs, g)
    b = entity_words(b_alpha, word_size, n_pairs, g)
    perm = torch.randperm(n_pairs, generator=g)
    n_train = int(round(train_fraction * n_pairs))
    train_pairs, valid_pairs = perm[:n_train].sort().values, perm[n_train:].sort().values
    forward_seen = torch.rand(len(valid_pairs), generator=g) < 0.5

    vp_f, vp_b = valid_pairs[forward_seen], valid_pairs[~forward_seen]
    train = SeqData.cat([
        sequences(a[train_pairs], FORWARD, b[train_pairs]),
        sequences(b[train_pairs], BACKWARD, a[train_pairs]),
        sequences(a[vp_f], FORWARD, b[vp_f]),      # seen direction of held-out pairs
        sequences(b[vp_b], BACKWARD, a[vp_b]),
    ])
    valid = SeqData.cat([
        sequences(b[vp_f], BACKWARD, a[vp_f]),     # the reverse of what was seen
        sequences(a[vp_b], FORWARD, b[vp_b]),
    ])
    return ReversalData(train, valid, vocab_size + N_RELATIONS, a, b, train_pairs, valid_pairs, forward_seen)
